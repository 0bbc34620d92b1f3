package control

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/upgraded/upgraded/statebackup"
)

// recoverBackend plans a recovery from host A; carrying it out fails when asked to rebuild from a file.
type recoverBackend struct {
	plainBackend
	got *RecoverRequest
}

func (b recoverBackend) Recover(_ context.Context, req RecoverRequest) (*RecoverReport, error) {
	*b.got = req
	rep := &RecoverReport{DryRun: req.DryRun, Choice: &statebackup.Choice{Source: statebackup.Source{Host: "A", Pins: 3}}}
	if req.From != "" {
		rep.Results = []StepResult{{Step: statebackup.Step{Host: "A", Action: statebackup.ActRebuild}, Error: "disk full"}}
		return rep, errors.New("rebuild on A: disk full")
	}
	return rep, nil
}

func TestRecoverRoute(t *testing.T) {
	var got RecoverRequest
	cl := serve(t, recoverBackend{got: &got})
	ctx := context.Background()
	rep, err := cl.Recover(ctx, RecoverRequest{DryRun: true})
	if err != nil || !rep.DryRun || rep.Choice.Source.Host != "A" || !got.DryRun {
		t.Fatalf("dry run: %v %+v (request %+v)", err, rep, got)
	}
	// A failed recovery comes back with its report: the operator sees how far it went.
	rep, err = cl.Recover(ctx, RecoverRequest{From: "/x.ndjson"})
	if !errors.Is(err, ErrRecoverFailed) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("failed recovery: %v", err)
	}
	if rep == nil || len(rep.Results) != 1 || rep.Results[0].Error != "disk full" || got.From != "/x.ndjson" {
		t.Fatalf("failed recovery's report %+v (request %+v)", rep, got)
	}
}

func TestRecoverRouteWithoutBackend(t *testing.T) {
	_, err := serve(t, plainBackend{}).Recover(context.Background(), RecoverRequest{DryRun: true})
	if err == nil || !strings.Contains(err.Error(), "cannot recover") {
		t.Fatalf("a daemon without recovery answered %v", err)
	}
}
