package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// TestPauseResumeAbort: a paused plan does not switch; resumed, it finishes;
// an abort during the preparation fails the plan with nothing stopped, and an
// abort during a rolling switch rolls every host back to the old version.
func TestPauseResumeAbort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 5})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	op := func(name, id string) {
		t.Helper()
		if out, err := c.CLI(ctx, name, id, "--config", c.Hosts[1].ConfigDir); err != nil {
			t.Fatalf("%s: %v", name, err)
		} else if !strings.Contains(out, "the operator on") {
			t.Fatalf("%s must say who asked: %s", name, out)
		}
	}

	// Abort during the preparation.
	id, err := c.Announce(ctx, 0, rel, "--procedure", "standard")
	if err != nil {
		t.Fatal(err)
	}
	op("abort", id)
	p, err := c.WaitPlan(ctx, 0, id)
	if err != nil || p.Phase != plan.PhaseFailed || !strings.Contains(p.Reason, "aborted") {
		t.Fatalf("abort in preparation: %v %s %s", err, p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.0.8", 5)

	// Pause: every host prepares, but nothing switches until resume.
	id, err = c.Announce(ctx, 0, rel, "--procedure", "standard")
	if err != nil {
		t.Fatal(err)
	}
	op("pause", id)
	err = simtest.WaitFor(ctx, "every host prepared", func() bool {
		st, err := c.Status(ctx, 0)
		if err != nil || st.Plan == nil || st.Plan.ID != id {
			return false
		}
		for _, h := range st.Plan.Hosts {
			if h.Step != plan.StepPrepared && h.Step != plan.StepPending {
				return false
			}
		}
		return st.Plan.Paused
	})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := c.Status(ctx, 0)
	if st.Plan.Phase != plan.PhasePreparing {
		t.Fatalf("a paused plan moved to %s", st.Plan.Phase)
	}
	requireAll(t, ctx, c, "1.0.8", 5)
	op("resume", id)
	if p, err = c.WaitPlan(ctx, 0, id); err != nil || !p.Succeeded() {
		t.Fatalf("resumed plan: %v %s %s", err, p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.1.6", 5)

	// Abort during a rolling switch: back to 1.1.6 from 1.1.7 everywhere.
	rel2, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.7"})
	if err != nil {
		t.Fatal(err)
	}
	id, err = c.Announce(ctx, 0, rel2, "--procedure", "rolling", "--settle", "60s")
	if err != nil {
		t.Fatal(err)
	}
	err = simtest.WaitFor(ctx, "the first batch verified", func() bool {
		st, err := c.Status(ctx, 0)
		return err == nil && st.Plan != nil && st.Plan.ID == id && !st.Plan.NextBatchAt.IsZero()
	})
	if err != nil {
		t.Fatal(err)
	}
	op("abort", id)
	if p, err = c.WaitPlan(ctx, 0, id); err != nil || p.Phase != plan.PhaseRolledBack {
		t.Fatalf("abort in the switch: %v %s %s", err, p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.1.6", 5)

	// Every daemon kept the history: three plans, their signer and outcome,
	// and every step of each.
	// The plan ended on daemon 0; the others apply the last entry a moment later.
	var out string
	_ = simtest.WaitFor(ctx, "daemons 1 and 2 to record the end", func() bool {
		o1, err1 := c.CLI(ctx, "history", "--config", c.Hosts[1].ConfigDir)
		o2, err2 := c.CLI(ctx, "history", "--config", c.Hosts[2].ConfigDir)
		out = o2
		return err1 == nil && err2 == nil && strings.Contains(o1, "rolled-back") && strings.Contains(o2, "rolled-back")
	})
	for _, want := range []string{"failed", "done", "rolled-back", plan.ShortID(c.OperatorID)} {
		if !strings.Contains(out, want) {
			t.Fatalf("history lacks %q:\n%s\n%s", want, out, c.CLIOrErr(ctx, "history", "--config", c.Hosts[2].ConfigDir, "--json"))
		}
	}
	out, err = c.CLI(ctx, "history", "--config", c.Hosts[1].ConfigDir, "--plan", id)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"prepared", "verified", "rolling-back", "rolled-back", "aborted by the operator on"} {
		if !strings.Contains(out, want) {
			t.Fatalf("history of plan %s lacks %q:\n%s", id, want, out)
		}
	}
}

// TestDryRunDoesNothing: announce --dry-run prints hosts, steps, checks and
// artifacts, and changes nothing; a refused one says why.
func TestDryRunDoesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 3})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"announce", "--config", c.Hosts[0].ConfigDir, "--key", c.KeyFile, "--dry-run"}, rel...)
	out, err := c.CLI(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"auto: rolling if 1.1.6", "hosts, in order:", "3. ", "sha256 of", "nothing was done"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dry run lacks %q:\n%s", want, out)
		}
	}
	st, err := c.Status(ctx, 0)
	if err != nil || st.Plan != nil {
		t.Fatalf("a dry run created a plan: %+v %v", st.Plan, err)
	}
	down := append([]string{"announce", "--config", c.Hosts[0].ConfigDir, "--key", c.KeyFile, "--dry-run"}, rel...)
	down[len(down)-len(rel)+1] = "1.0.7" // --version 1.0.7: a downgrade
	if out, err := c.CLI(ctx, down...); err == nil || !strings.Contains(out+err.Error(), "REFUSED NOW") {
		t.Fatalf("a dry run of a downgrade must say it would be refused: %s %v", out, err)
	}
	requireAll(t, ctx, c, "1.0.8", 3)
}

// TestPlanWaitsForItsStart: announce --at a later time, or outside the
// maintenance windows, schedules the plan; nothing moves before its start.
func TestPlanWaitsForItsStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 3})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Announce(ctx, 0, rel, "--procedure", "standard", "--at", "+6s")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, 0)
	if err != nil || st.Plan == nil || st.Plan.Phase != plan.PhaseScheduled {
		t.Fatalf("want the plan scheduled, got %+v %v", st.Plan, err)
	}
	notBefore := st.Plan.NotBefore
	p, err := c.WaitPlan(ctx, 0, id)
	if err != nil || !p.Succeeded() {
		t.Fatalf("scheduled plan: %v %s %s", err, p.Phase, p.Reason)
	}
	for hid, h := range p.Hosts {
		if h.StepStarted.Before(notBefore) && h.Step != plan.StepPending {
			t.Fatalf("host %s moved before the start time %s", hid, notBefore)
		}
	}
	requireAll(t, ctx, c, "1.1.6", 3)
}
