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
	op := func(name string) {
		t.Helper()
		if out, err := c.CLI(ctx, name, "--config", c.Hosts[1].ConfigDir); err != nil {
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
	op("abort")
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
	op("pause")
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
	op("resume")
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
	op("abort")
	if p, err = c.WaitPlan(ctx, 0, id); err != nil || p.Phase != plan.PhaseRolledBack {
		t.Fatalf("abort in the switch: %v %s %s", err, p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.1.6", 5)
}
