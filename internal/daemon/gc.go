package daemon

import (
	"context"

	"github.com/upgraded/upgraded/coordination/plan"
)

// Garbage collection targets (GOGC) of a daemon that chooses its own (LeanGC).
//
// The daemon idles beside its peer for months on a live heap of a few MB,
// and Go's default of 100 lets the heap grow to twice that between
// collections. Idle at N=50 (50 daemons on one machine, 40 s), 50 instead of
// 100 took resident memory from 42.2 to 39.0 MB (median; anonymous 15.7 ->
// 12.5 MB) for daemon CPU within run-to-run noise (1263 -> 1327 ticks for
// all 50). During an upgrade the daemons decode every peer's answers several
// times a second, and on the benchmark's saturated machine 50 throughout gave
// N=50 downtimes of 9.7 and 11.6 s against 7.3-8.2 s at 100: so the lean
// target holds only while no plan runs.
//
// At N=100 (every daemon connected to the 99 others) 50 left the raft leader
// at 43.3-43.4 MB resident: its live heap is 8-10 MB, with two goroutines
// and two streams per member. At 10 the leader was 39.9-40.3 MB and the
// median daemon 35.9-36.1 MB (37.6-37.7 at 50), but the idle daemons took
// 1.16-1.21 of the machine's 2 cores against 0.82-0.87 at 50. At 25: leader
// 41.4 MB, median 35.7-35.8 MB, idle daemons 0.83-0.86 of 2 cores (two runs).
const (
	IdleGOGC = 25
	BusyGOGC = 100
)

// LeanGC makes Run collect garbage at IdleGOGC while no plan runs and at
// BusyGOGC while one does. The command leaves GOGC alone when the operator
// set it.
func (d *Daemon) LeanGC() { d.leanGC = true }

// planRunning tells whether the plan state holds a plan that has not ended.
func (d *Daemon) planRunning() (running bool) {
	d.fsm.View(func(s *plan.State) { running = s.CurrentPlan() != nil })
	return running
}

// tuneGC follows the plan state until ctx ends, setting the GC target.
func (d *Daemon) tuneGC(ctx context.Context, set func(int) int) {
	changes, cancel := d.fsm.Subscribe()
	defer cancel()
	cur := -1
	for {
		want := IdleGOGC
		if d.planRunning() {
			want = BusyGOGC
		}
		if want != cur {
			set(want)
			cur = want
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}
