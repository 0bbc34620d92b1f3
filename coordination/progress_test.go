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
	const warning = "this host's progress has not reached the raft leader; still trying"
	// failFor fails n sends, one every progressRetry, and wants the warnings
	// logged so far to number want.
	failFor := func(n, want int, when string) {
		t.Helper()
		for range n {
			c.warnUndelivered(&f, "p", plan.HostProgress{Step: plan.StepPrepared}, fail)
			now = now.Add(progressRetry)
		}
		if got := logs.FilterMessage(warning).Len(); got != want {
			t.Fatalf("%d warnings %s, want %d", got, when, want)
		}
	}

	failFor(20, 0, "within the first 10 s of failures (0 to 9.5 s)")
	failFor(1, 1, "once failures lasted 10 s")
	w := logs.FilterMessage(warning).All()[0].ContextMap()
	if w["leader"] != leader.String() || w["error"] != fail.Error() || w["step"] != string(plan.StepPrepared) {
		t.Fatalf("the warning lacks what an operator needs: %v", w)
	}
	failFor(59, 1, "within 30 s of the first (10.5 to 39.5 s)")
	failFor(1, 2, "30 s after the first")
}
