package daemon

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// The GC target is lean while no plan runs and the default while one does.
func TestGCTargetFollowsThePlans(t *testing.T) {
	fsm := plan.NewFSM(zap.NewNop())
	d := &Daemon{fsm: fsm}
	var mu sync.Mutex
	var set []int
	targets := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(set)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.tuneGC(ctx, func(p int) int {
			mu.Lock()
			defer mu.Unlock()
			set = append(set, p)
			return 0
		})
	}()
	defer func() { cancel(); <-done }()
	waitFor := func(want ...int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if slices.Equal(targets(), want) {
				return
			}
		}
		t.Fatalf("GC targets set %v, want %v", targets(), want)
	}
	var index uint64
	apply := func(c plan.Command) {
		t.Helper()
		index++
		if res := fsm.Apply(&raft.Log{Index: index, Data: c.Encode(), AppendedAt: time.Now()}); res != nil {
			t.Fatalf("%s: %v", c.Op, res)
		}
	}

	waitFor(IdleGOGC)
	apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: "A", ClusterPeer: "cA", Version: "1.0.8"}})
	apply(plan.Command{Op: plan.OpPropose, Announcement: &plan.Announcement{ID: "p1", Version: "1.1.6", Procedure: plan.Standard,
		Artifacts: []plan.Artifact{{Source: "/tmp/x.tar.gz", SHA256: strings.Repeat("ab", 32)}},
		IssuedAt:  time.Now(), ExpiresAt: time.Now().Add(time.Hour)}})
	waitFor(IdleGOGC, BusyGOGC)
	apply(plan.Command{Op: plan.OpProgress, PlanID: "p1", HostID: "A", Progress: &plan.HostProgress{Step: plan.StepFailed, Error: "disk full"}})
	waitFor(IdleGOGC, BusyGOGC, IdleGOGC)
}
