package daemon

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/plan"
)

// After the raft leader answered an announcement, reads of this daemon's
// plan state wait until it holds the announcement: an operator who runs
// status right after announce sees what announce told.
func TestReadsWaitForTheAnnouncementTheLeaderAnswered(t *testing.T) {
	log := zaptest.NewLogger(t)
	fsm := plan.NewFSM(log)
	d := &Daemon{fsm: fsm, log: log}
	id := "p1"
	d.announced.Store(&id)
	go func() {
		time.Sleep(100 * time.Millisecond)
		cmd := plan.Command{Op: plan.OpReject, Announcement: &plan.Announcement{ID: id}, Reason: "another plan is in progress"}
		fsm.Apply(&raft.Log{Index: 7, Data: cmd.Encode(), AppendedAt: time.Now()})
	}()
	began := time.Now()
	d.awaitAnnounced()
	waited := time.Since(began)
	var held bool
	fsm.View(func(s *plan.State) { _, held = s.Rejected[id] })
	if !held {
		t.Fatalf("the read went ahead after %v without the announcement in the plan state", waited)
	}
	if d.announced.Load() != nil {
		t.Fatal("the announcement is still awaited once held")
	}
	began = time.Now()
	d.awaitAnnounced()
	if w := time.Since(began); w > time.Second {
		t.Fatalf("a read with nothing awaited waited %v", w)
	}
}
