package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/harness"
)

func TestBootstrapUpgrade(t *testing.T) {
	for _, peers := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d peers", peers), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			c := newCluster(t, ctx, scenario{peers: peers, consensus: "raft", from: "1.0.8", pins: 15})
			start := time.Now()
			p := upgrade(t, ctx, c, simtest.BuildSpec{Version: "1.1.6"}, "--procedure", "bootstrap", "--wait")
			if !p.Succeeded() {
				t.Fatalf("plan ended %s: %s", p.Phase, p.Reason)
			}
			requireAll(t, ctx, c, "1.1.6", 15)
			if p.Survivor == "" || p.SurvivorReason == "" || len(p.Order) != peers-1 {
				t.Fatalf("survivor %q (%q), order %v", p.Survivor, p.SurvivorReason, p.Order)
			}
			// Every removed peer's old state was kept, and where is recorded.
			for _, h := range c.Hosts {
				st, _ := c.Status(ctx, h.Index)
				if st.Self.ID == p.Survivor {
					// The raft trap: after peers rm the survivor's offline export is
					// short; it must have been noticed and not trusted.
					if note := awaitJournal(t, ctx, h, p.ID, "export-offline", "done").Data["note"]; !strings.Contains(note, "not trusted") {
						t.Errorf("survivor's short offline export not reported: %q", note)
					}
					continue
				}
				if kept := journalValue(t, h, p.ID, "remove", "kept"); !strings.Contains(kept, "raft.old.") {
					t.Errorf("host %d: old state location not recorded: %q", h.Index, kept)
				}
			}
			outage := journalSpan(t, c, p.Survivor, p.ID, "stop", "begin", "verify", "done")
			t.Logf("bootstrap upgrade of %d raft peers: %s in all; no peer answered with the full pinset for %s (survivor stop to survivor verified)",
				peers, time.Since(start).Round(10*time.Millisecond), outage.Round(time.Millisecond))
		})
	}
}

func TestBootstrapSurvivorFailingOnStartRollsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, consensus: "raft", from: "1.0.8", pins: 9})
	p := upgrade(t, ctx, c, simtest.BuildSpec{Version: "1.1.6", Fault: "fail-start"}, "--procedure", "bootstrap")
	if p.Phase != plan.PhaseRolledBack {
		t.Fatalf("plan ended %s (%s), want rolled-back", p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.0.8", 9)
}

// TestBootstrapRejoinFailureLeavesOneOut: a removed host whose peer cannot
// start again is retried, then left out and reported, while the rest of the
// cluster ends on the target with every pin.
func TestBootstrapRejoinFailureLeavesOneOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, consensus: "raft", from: "1.0.8", pins: 9})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Announce(ctx, 0, rel, "--procedure", "bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	broken := -1
	err = simtest.WaitFor(ctx, "a removed host", func() bool {
		st, err := c.Status(ctx, 0)
		if err != nil || st.Plan == nil || st.Plan.ID != id {
			return false
		}
		for hid, h := range st.Plan.Hosts {
			if h.Step == plan.StepRemoved {
				broken = c.IndexOf(ctx, hid)
				return broken >= 0
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	// Its peer is stopped now; from here on it fails whenever it starts.
	if err := c.CrashDaemon(ctx, broken, []string{"CLUSTERSIM_FAULT=fail-start"}); err != nil {
		t.Fatal(err)
	}
	watcher := (broken + 1) % len(c.Hosts)
	p, err := c.WaitPlan(ctx, watcher, id)
	if err != nil {
		t.Fatal(err)
	}
	brokenID := c.HostID(ctx, broken)
	if p.Phase != plan.PhaseDone || p.Succeeded() || p.Hosts[brokenID].Step != plan.StepLeftOut {
		t.Fatalf("want done with host %d left out, got %s (%s), its step %s", broken, p.Phase, p.Reason, p.Hosts[brokenID].Step)
	}
	if !strings.Contains(p.Reason, "could not rejoin") {
		t.Fatalf("the reason must report the host left out: %q", p.Reason)
	}
	for i, v := range c.Views(ctx) {
		if i == broken {
			continue
		}
		if v.Err != nil || v.Version != "1.1.6" || v.Pins < 9 {
			t.Fatalf("peer %d: %+v", i, v)
		}
	}
}

// TestBootstrapLeaderKilled SIGKILLs the daemon leading the raft group of
// daemons at each stage of the sequence, then restarts it: another daemon
// takes over from the recorded step and the plan still ends consistently.
func TestBootstrapLeaderKilled(t *testing.T) {
	stages := []struct {
		name string
		rank int
	}{{"while a peer is removed", 1}, {"while the survivor restarts", 3}, {"while a peer rejoins", 5}}
	for _, stage := range stages {
		t.Run(stage.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			c := newCluster(t, ctx, scenario{peers: 3, consensus: "raft", from: "1.0.8", pins: 9})
			rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
			if err != nil {
				t.Fatal(err)
			}
			id, err := c.Announce(ctx, 0, rel, "--procedure", "bootstrap")
			if err != nil {
				t.Fatal(err)
			}
			leader, reached := -1, 0
			err = simtest.WaitFor(ctx, "stage "+stage.name, func() bool {
				st, err := c.Status(ctx, 0)
				if err != nil || st.Plan == nil || st.Plan.ID != id {
					return false
				}
				reached = bootstrapRank(st.Plan)
				leader = c.IndexOf(ctx, st.Leader)
				return reached >= stage.rank && leader >= 0
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CrashDaemon(ctx, leader, nil); err != nil {
				t.Fatal(err)
			}
			p, err := c.WaitPlan(ctx, (leader+1)%len(c.Hosts), id)
			if err != nil {
				t.Fatal(err)
			}
			switch p.Phase {
			case plan.PhaseDone:
				requireAll(t, ctx, c, "1.1.6", 9)
			case plan.PhaseRolledBack:
				requireAll(t, ctx, c, "1.0.8", 9)
			default:
				t.Fatalf("plan ended %s: %s", p.Phase, p.Reason)
			}
			t.Logf("leading daemon %d killed at stage %d; plan ended %s: %s", leader, reached, p.Phase, p.Reason)
		})
	}
}

// bootstrapRank says how far the sequence got: 1 a peer removing, 2 one
// removed, 3 the survivor restarting, 4 it is verified, 5 a peer rejoining,
// 6 one rejoined.
func bootstrapRank(p *plan.Plan) int {
	rank := 0
	for id, h := range p.Hosts {
		r := 0
		switch {
		case id == p.Survivor && h.Step == plan.StepVerified:
			r = 4
		case id == p.Survivor && (h.Step == plan.StepStopping || h.Step == plan.StepSwapping || h.Step == plan.StepStarting):
			r = 3
		case h.Step == plan.StepRemoving:
			r = 1
		case h.Step == plan.StepRemoved:
			r = 2
		case h.Step == plan.StepRejoining:
			r = 5
		case h.Step == plan.StepVerified:
			r = 6
		}
		rank = max(rank, r)
	}
	return rank
}

// journalValue reads the data recorded with a step in a host's journal.
func journalValue(t *testing.T, h *harness.Host, planID, step, key string) string {
	t.Helper()
	val := ""
	forJournal(t, h, planID, func(r journalRecord) {
		if r.Step == step && r.Data[key] != "" {
			val = r.Data[key]
		}
	})
	return val
}

// awaitJournal waits (bounded by ctx) for the record of step and event in the
// journal of host h, which may come after the plan ended, and returns it.
func awaitJournal(t *testing.T, ctx context.Context, h *harness.Host, planID, step, event string) journalRecord {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var found *journalRecord
		forJournal(t, h, planID, func(r journalRecord) {
			if r.Step == step && r.Event == event {
				found = &r
			}
		})
		if found != nil {
			return *found
		}
		select {
		case <-ctx.Done():
			t.Fatalf("host %d: no %s/%s record in the journal of plan %s: %v", h.Index, step, event, planID, ctx.Err())
		case <-tick.C:
		}
	}
}

type journalRecord struct {
	At    time.Time
	Step  string
	Event string
	Data  map[string]string
}

func forJournal(t *testing.T, h *harness.Host, planID string, fn func(journalRecord)) {
	t.Helper()
	f, err := os.Open(filepath.Join(h.ConfigDir, "journal", planID+".jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r journalRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			fn(r)
		}
	}
}

// journalSpan is the time between two journal records of the host whose daemon is hostID.
func journalSpan(t *testing.T, c *harness.Cluster, hostID, planID, fromStep, fromEvent, toStep, toEvent string) time.Duration {
	t.Helper()
	for _, h := range c.Hosts {
		st, err := c.Status(context.Background(), h.Index)
		if err != nil || st.Self.ID != hostID {
			continue
		}
		var from, to time.Time
		forJournal(t, h, planID, func(r journalRecord) {
			if r.Step == fromStep && r.Event == fromEvent && from.IsZero() {
				from = r.At
			}
			if r.Step == toStep && r.Event == toEvent {
				to = r.At
			}
		})
		return to.Sub(from)
	}
	t.Fatalf("no host %s", hostID)
	return 0
}
