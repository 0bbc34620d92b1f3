package coordination

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
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

// fsmWithPlan is a plan state holding plan "p" of n hosts.
func fsmWithPlan(t *testing.T, n int, at time.Time) *plan.FSM {
	t.Helper()
	f := plan.NewFSM(zap.NewNop())
	var index uint64
	apply := func(c plan.Command) {
		index++
		if res := f.Apply(&raft.Log{Index: index, Data: c.Encode(), AppendedAt: at}); res != nil {
			t.Fatalf("%s: %v", c.Op, res)
		}
	}
	for i := range n {
		apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: fmt.Sprintf("h%d", i), ClusterPeer: fmt.Sprintf("c%d", i), Version: "1.0.8"}})
	}
	apply(plan.Command{Op: plan.OpPropose, Signer: "op", Announcement: &plan.Announcement{ID: "p", Version: "1.1.6",
		Procedure: plan.Standard, IssuedAt: at, ExpiresAt: at.Add(time.Hour),
		Artifacts: []plan.Artifact{{Source: "x", SHA256: strings.Repeat("a", 64)}}}})
	return f
}

// In a plan of 10 hosts or more, the steps of the outage wait before they
// are sent, the later ones of the same outage do not extend the wait, and
// any other step goes at once; in a smaller plan nothing waits.
func TestOutageStepsWaitAndOtherStepsDoNot(t *testing.T) {
	now := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	small := &Coordinator{cfg: Config{Clock: func() time.Time { return now }, FSM: fsmWithPlan(t, 9, now)},
		pending: map[string]plan.HostProgress{}, heldTill: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	small.Report("p", plan.HostProgress{Step: plan.StepStopping})
	if small.held("p", now) {
		t.Fatal("a 9-host plan's stopping report waits")
	}
	c := &Coordinator{cfg: Config{Clock: func() time.Time { return now }, FSM: fsmWithPlan(t, 10, now)}, pending: map[string]plan.HostProgress{},
		heldTill: map[string]time.Time{}, holdMore: 200 * time.Millisecond, wake: make(chan struct{}, 1)}
	report := func(step plan.Step) { c.Report("p", plan.HostProgress{Step: step}) }
	at := func(d time.Duration) time.Time { return now.Add(d) }

	report(plan.StepPrepared)
	if c.held("p", now) {
		t.Fatal("a prepared report waits")
	}
	report(plan.StepStopping)
	if !c.held("p", at(time.Second)) || c.held("p", at(1200*time.Millisecond)) {
		t.Fatal("a stopping report must wait progressHold plus this host's spread (1.2 s), no more")
	}
	now = at(800 * time.Millisecond)
	report(plan.StepStarting) // replaces it, on the first one's clock
	if !c.held("p", at(300*time.Millisecond)) || c.held("p", at(400*time.Millisecond)) {
		t.Fatal("a later step of the same outage extended the wait")
	}
	if c.pending["p"].Step != plan.StepStarting {
		t.Fatalf("pending %s, want the latest step", c.pending["p"].Step)
	}
	report(plan.StepFailed)
	if c.held("p", now) {
		t.Fatal("a failure waits behind the outage's hold")
	}
	report(plan.StepStarting) // a new outage (a rollback's start) waits again
	if !c.held("p", at(time.Second)) {
		t.Fatal("a new outage step after another step does not wait")
	}
}
