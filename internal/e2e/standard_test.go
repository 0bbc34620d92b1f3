package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

func TestStandardUpgradeKeepsThePinset(t *testing.T) {
	for _, consensus := range []string{"crdt", "raft"} {
		t.Run(consensus, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := newCluster(t, ctx, scenario{peers: 3, consensus: consensus, from: "1.0.8", pins: 25})
			p := upgrade(t, ctx, c, simtest.BuildSpec{Version: "1.1.6"}, "--procedure", "standard", "--wait")
			if !p.Succeeded() {
				t.Fatalf("plan ended %s: %s", p.Phase, p.Reason)
			}
			requireAll(t, ctx, c, "1.1.6", 25)
			for id, h := range p.Hosts {
				if h.BackupPins != 25 {
					t.Errorf("host %s backed up %d pins, want 25", id, h.BackupPins)
				}
			}
			// The offline export of the stopped state is read from the folder
			// copies once the plan has ended: it is not part of the outage.
			for _, h := range c.Hosts {
				done := awaitJournal(t, ctx, h, p.ID, "export-offline", "done")
				var verified time.Time
				forJournal(t, h, p.ID, func(r journalRecord) {
					if r.Step == "verify" && r.Event == "done" {
						verified = r.At
					}
				})
				if verified.IsZero() || done.At.Before(verified) {
					t.Errorf("host %d: offline export done at %s, before its peer was verified (%s)", h.Index, done.At, verified)
				}
				switch {
				case done.Data["offline_pins"] == "25":
				case consensus == "raft" && strings.Contains(done.Data["note"], "not trusted"):
					// A raft export reads only the last snapshot: short, and said so.
				default:
					t.Errorf("host %d: offline export of the stopped state: %v", h.Index, done.Data)
				}
			}
		})
	}
}

func TestFailingNewVersionRollsBackEverywhere(t *testing.T) {
	cases := []struct {
		name, from, fault string
	}{
		{"fails on start", "1.0.8", "fail-start"},
		{"comes up with a short pinset", "1.0.8", "short-pinset"},
		// 1.x migrates 0.14.5's badger/ into pebble/ on start; 0.14.5 cannot read
		// pebble/, so the rollback must restore the state folders.
		{"migrated state restored on rollback", "0.14.5", "short-pinset"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := newCluster(t, ctx, scenario{peers: 3, from: tc.from, pins: 12})
			p := upgrade(t, ctx, c, simtest.BuildSpec{Version: "1.1.6", Fault: tc.fault}, "--procedure", "standard")
			if p.Phase != plan.PhaseRolledBack {
				t.Fatalf("plan ended %s (%s), want rolled-back", p.Phase, p.Reason)
			}
			requireAll(t, ctx, c, tc.from, 12)
		})
	}
}

func TestBadArtifactFailsBeforeAnythingStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 5})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	pids := peerPIDs(t, c)
	cases := map[string]func(args []string) []string{
		"wrong sha256": func(a []string) []string {
			b := append([]string(nil), a...)
			b[5] = strings.Repeat("0", 64)
			return b
		},
		"unreachable artifact": func(a []string) []string {
			b := append([]string(nil), a...)
			b[3] = "http://127.0.0.1:1/nothing-here.tar.gz"
			return b
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := c.CLI(ctx, append([]string{"announce", "--config", c.Hosts[0].ConfigDir, "--key", c.KeyFile, "--wait", "--timeout", "90s"}, mutate(rel)...)...)
			if err == nil {
				t.Fatalf("announce --wait succeeded with a bad artifact:\n%s", out)
			}
			if !strings.Contains(err.Error(), "nothing was stopped") {
				t.Fatalf("want a failure before any stop, got: %v", err)
			}
		})
	}
	requireAll(t, ctx, c, "1.0.8", 5)
	if now := peerPIDs(t, c); !equalInts(now, pids) {
		t.Fatalf("a peer was restarted by a plan that failed in preparation: pids %v -> %v", pids, now)
	}
}

// TestDaemonKilled kills one daemon with SIGKILL at a step and restarts it:
// the plan must end consistently, every host on one version, no pin lost.
func TestDaemonKilled(t *testing.T) {
	for _, at := range []plan.Step{plan.StepPreparing, plan.StepStopping} {
		t.Run(string(at), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 10})
			rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
			if err != nil {
				t.Fatal(err)
			}
			id, err := c.Announce(ctx, 0, rel, "--procedure", "standard")
			if err != nil {
				t.Fatal(err)
			}
			victim := 2
			st, err := c.Status(ctx, victim)
			if err != nil {
				t.Fatal(err)
			}
			me := st.Self.ID
			err = simtest.WaitFor(ctx, "host to reach "+string(at), func() bool {
				st, err := c.Status(ctx, 0)
				return err == nil && st.Plan != nil && st.Plan.ID == id && st.Plan.Hosts[me] != nil && stepAtOrAfter(st.Plan.Hosts[me].Step, at)
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CrashDaemon(ctx, victim, nil); err != nil {
				t.Fatal(err)
			}
			p, err := c.WaitPlan(ctx, 0, id)
			if err != nil {
				t.Fatal(err)
			}
			switch p.Phase {
			case plan.PhaseDone:
				requireAll(t, ctx, c, "1.1.6", 10)
			case plan.PhaseRolledBack, plan.PhaseFailed:
				requireAll(t, ctx, c, "1.0.8", 10)
			default:
				t.Fatalf("plan ended %s: %s", p.Phase, p.Reason)
			}
			t.Logf("plan ended %s: %s", p.Phase, p.Reason)
		})
	}
}

var stepOrder = []plan.Step{plan.StepPending, plan.StepPreparing, plan.StepPrepared, plan.StepStopping,
	plan.StepSwapping, plan.StepStarting, plan.StepVerified}

func stepAtOrAfter(s, at plan.Step) bool {
	idx := func(x plan.Step) int {
		for i, y := range stepOrder {
			if x == y {
				return i
			}
		}
		return len(stepOrder)
	}
	return idx(s) >= idx(at)
}
