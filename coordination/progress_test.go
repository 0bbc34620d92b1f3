package coordination

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/upgraded/upgraded/coordination/plan"
)

// A report that cannot reach the leader is the operator's business once it
// has failed for longer than an election takes: warned then, and not at
// every 500 ms retry after that.
func TestUndeliveredReportsWarnAfterAWhileAndNotOften(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	now := time.Date(2026, 11, 25, 1, 0, 0, 0, time.UTC)
	leader := newPeerID(t)
	c := &Coordinator{log: zap.New(core), cfg: Config{Clock: func() time.Time { return now }},
		leader: func() (peer.ID, bool) { return leader, true }}
	var f failStreak
	fail := errors.New("opening stream: dial backoff")
	warnings := func() int {
		return logs.FilterMessage("this host's progress has not reached the raft leader; still trying").Len()
	}

	for range 19 { // 9.5 s of retries
		c.warnUndelivered(&f, "p", plan.HostProgress{Step: plan.StepPrepared}, fail)
		now = now.Add(progressRetry)
	}
	if n := warnings(); n != 0 {
		t.Fatalf("%d warnings within the first 10 s of failures, want none", n)
	}
	now = now.Add(progressRetry)
	c.warnUndelivered(&f, "p", plan.HostProgress{Step: plan.StepPrepared}, fail)
	if n := warnings(); n != 1 {
		t.Fatalf("%d warnings after 10 s of failures, want 1", n)
	}
	w := logs.FilterMessage("this host's progress has not reached the raft leader; still trying").All()[0].ContextMap()
	if w["leader"] != leader.String() || w["error"] != fail.Error() || w["step"] != string(plan.StepPrepared) {
		t.Fatalf("the warning lacks what an operator needs: %v", w)
	}
	for range 59 { // the next 29.5 s
		now = now.Add(progressRetry)
		c.warnUndelivered(&f, "p", plan.HostProgress{Step: plan.StepPrepared}, fail)
	}
	if n := warnings(); n != 1 {
		t.Fatalf("%d warnings within 30 s of the first, want 1", n)
	}
	now = now.Add(progressRetry)
	c.warnUndelivered(&f, "p", plan.HostProgress{Step: plan.StepPrepared}, fail)
	if n := warnings(); n != 2 {
		t.Fatalf("%d warnings 30 s after the first, want 2", n)
	}
}
