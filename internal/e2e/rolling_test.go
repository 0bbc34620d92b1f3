package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/harness"
)

func TestAutoChoosesTheProcedure(t *testing.T) {
	cases := []struct {
		name, consensus, from string
		want                  plan.Procedure
	}{
		{"same RPC protocol: rolling", "crdt", "1.0.8", plan.Rolling},
		{"RPC change on crdt: standard", "crdt", "0.14.5", plan.Standard},
		{"RPC change on raft: bootstrap", "raft", "0.14.5", plan.Bootstrap},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			c := newCluster(t, ctx, scenario{peers: 3, consensus: tc.consensus, from: tc.from, pins: 7})
			p := upgrade(t, ctx, c, simtest.BuildSpec{Version: "1.1.6"}, "--wait")
			if p.Chosen != tc.want || p.ChoiceReason == "" {
				t.Fatalf("auto chose %s (%s), want %s", p.Chosen, p.ChoiceReason, tc.want)
			}
			if !p.Succeeded() {
				t.Fatalf("plan ended %s: %s", p.Phase, p.Reason)
			}
			requireAll(t, ctx, c, "1.1.6", 7)
			t.Logf("%s", p.ChoiceReason)
		})
	}
}

// availability is a client that adds and lists pins through every peer in a
// loop and records, per peer and for the cluster as a whole, the longest
// stretch without an answer.
type availability struct {
	peers   []simtest.Peer
	mu      sync.Mutex
	down    []time.Time // per peer: since when it fails ("" when answering)
	worst   []time.Duration
	cluster time.Duration
	acked   []string
}

func watchAvailability(ctx context.Context, c *harness.Cluster) (*availability, func()) {
	av := &availability{peers: c.Peers, down: make([]time.Time, len(c.Peers)), worst: make([]time.Duration, len(c.Peers))}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var clusterDown time.Time
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			now, anyUp := time.Now(), false
			for i, p := range av.peers {
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				code, _, err := simtest.Get(rctx, p.APIURL, "/allocations?filter=all")
				if err == nil && code == 200 && n%4 == i%4 { // and pin through it, now and then
					cid := harness.FakeCID("availability", n)
					if c, _, err := simtest.Do(rctx, "POST", p.APIURL, "/pins/"+cid+"?name=availability"); err == nil && c == 200 {
						av.mu.Lock()
						av.acked = append(av.acked, cid)
						av.mu.Unlock()
					}
				}
				rcancel()
				av.mu.Lock()
				if err == nil && code == 200 {
					anyUp = true
					if !av.down[i].IsZero() {
						av.worst[i] = max(av.worst[i], now.Sub(av.down[i]))
						av.down[i] = time.Time{}
					}
				} else if av.down[i].IsZero() {
					av.down[i] = now
				}
				av.mu.Unlock()
			}
			av.mu.Lock()
			if anyUp && !clusterDown.IsZero() {
				av.cluster = max(av.cluster, now.Sub(clusterDown))
				clusterDown = time.Time{}
			} else if !anyUp && clusterDown.IsZero() {
				clusterDown = now
			}
			av.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return av, func() { cancel(); <-done }
}

func TestRollingUpgradeKeepsTheClusterServing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const settle = 3 * time.Second
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 10})
	av, stop := watchAvailability(ctx, c)
	p := upgrade(t, ctx, c, simtest.BuildSpec{Version: "1.1.6"}, "--procedure", "rolling", "--settle", settle.String(), "--wait")
	stop()
	if !p.Succeeded() || p.Chosen != plan.Rolling {
		t.Fatalf("plan ended %s (%s): %s", p.Phase, p.Chosen, p.Reason)
	}
	if av.cluster > 0 {
		t.Fatalf("the cluster as a whole stopped answering for %s during a rolling upgrade", av.cluster)
	}
	for i, w := range av.worst {
		if w > settle {
			t.Fatalf("peer %d did not answer for %s, more than the settle window %s", i, w, settle)
		}
	}
	requireAll(t, ctx, c, "1.1.6", 10+len(av.acked))
	t.Logf("rolling upgrade of 3 peers: no moment without an answering peer; longest per-peer gap %v; %d pins acknowledged during it, all present",
		av.worst, len(av.acked))
}

// TestCanaryFailingItsSoakRollsBackAlone: the canary's new version crashes
// while it soaks; it alone is rolled back, the other hosts are never touched,
// and the version is refused afterwards unless --allow-failed-version.
func TestCanaryFailingItsSoakRollsBackAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 6})
	pids := peerPIDs(t, c)
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Announce(ctx, 0, rel, "--procedure", "rolling", "--canary", "1", "--soak", "60s")
	if err != nil {
		t.Fatal(err)
	}
	canary := -1
	err = simtest.WaitFor(ctx, "the canary verified and soaking", func() bool {
		st, err := c.Status(ctx, 0)
		if err != nil || st.Plan == nil || st.Plan.ID != id || len(st.Plan.Batch) != 1 || st.Plan.NextBatchAt.IsZero() {
			return false
		}
		canary = c.IndexOf(ctx, st.Plan.Batch[0])
		return canary >= 0
	})
	if err != nil {
		t.Fatal(err)
	}
	crashPeer(t, c, canary)
	p, err := c.WaitPlan(ctx, 0, id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Phase != plan.PhaseRolledBack {
		t.Fatalf("plan ended %s (%s), want rolled-back", p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.0.8", 6)
	now := peerPIDs(t, c)
	for i := range c.Hosts {
		if i != canary && now[i] != pids[i] {
			t.Fatalf("host %d was touched though only the canary (%d) was upgraded: pid %d -> %d", i, canary, pids[i], now[i])
		}
	}
	if _, err := c.Announce(ctx, 0, rel, "--procedure", "rolling"); err == nil || !strings.Contains(err.Error(), "rolled back before") {
		t.Fatalf("a rolled-back version must be refused: %v", err)
	}
	if _, err := c.Announce(ctx, 0, rel, "--procedure", "rolling", "--allow-failed-version", "--wait"); err != nil {
		t.Fatalf("--allow-failed-version: %v", err)
	}
	requireAll(t, ctx, c, "1.1.6", 6)
}

// crashPeer kills host i's cluster peer with SIGKILL, as a crash would.
func crashPeer(t *testing.T, c *harness.Cluster, i int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Hosts[i].ConfigDir, "run", "ipfs-cluster-service.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ PID int }
	if err := json.Unmarshal(b, &rec); err != nil || rec.PID < 2 {
		t.Fatalf("pidfile %s: %v", b, err)
	}
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(fmt.Errorf("crashing peer %d: %w", i, err))
	}
}
