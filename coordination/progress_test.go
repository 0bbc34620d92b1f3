package coordination

import (
	"context"
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
		pending: map[string]plan.HostProgress{}, heldTill: map[string]time.Time{}, outage: map[string]int64{}, wake: make(chan struct{}, 1)}
	small.Report("p", plan.HostProgress{Step: plan.StepStopping})
	if small.held("p", now) {
		t.Fatal("a 9-host plan's stopping report waits")
	}
	c := &Coordinator{cfg: Config{Clock: func() time.Time { return now }, FSM: fsmWithPlan(t, 10, now)}, pending: map[string]plan.HostProgress{},
		heldTill: map[string]time.Time{}, outage: map[string]int64{}, holdMore: 200 * time.Millisecond, wake: make(chan struct{}, 1)}
	report := func(step plan.Step) { c.Report("p", plan.HostProgress{Step: step}) }
	at := func(d time.Duration) time.Time { return now.Add(d) }

	report(plan.StepPrepared)
	if c.held("p", now) {
		t.Fatal("a prepared report waits")
	}
	report(plan.StepStopping)
	if !c.held("p", at(5*time.Second)) || c.held("p", at(5200*time.Millisecond)) {
		t.Fatal("a stopping report must wait progressHold plus this host's spread (5.2 s), no more")
	}
	now = at(4800 * time.Millisecond)
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
	if !c.held("p", at(5*time.Second)) {
		t.Fatal("a new outage step after another step does not wait")
	}
}

// While this host stops, swaps and starts its peer, its record is not sent
// again: every host would register its peer's new version at the moment all
// of them restart, and the verified report records that version anyway.
// Once the plan state holds the host's next step, or the plan ends,
// registration resumes.
func TestRegistrationWaitsOutTheHostsOutage(t *testing.T) {
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	fsm := fsmWithPlan(t, 10, now)
	asked, running := 0, "1.0.8"
	c := &Coordinator{log: zap.NewNop(), self: "h0", pending: map[string]plan.HostProgress{}, heldTill: map[string]time.Time{},
		outage: map[string]int64{}, wake: make(chan struct{}, 1),
		cfg: Config{Clock: func() time.Time { return now }, FSM: fsm, HostInfo: func(context.Context) (plan.Host, error) {
			asked++
			// The record in the state, once it holds the version running: then
			// register has nothing to send (and no raft to send it with here).
			return plan.Host{ID: "h0", ClusterPeer: "c0", Version: running}, nil
		}}}
	ctx := context.Background()
	if !c.register(ctx) || asked != 1 {
		t.Fatalf("before the outage: register up to date %v after %d questions, want true after 1", c.register(ctx), asked)
	}
	for _, step := range []plan.Step{plan.StepStopping, plan.StepSwapping, plan.StepStarting} {
		c.Report("p", plan.HostProgress{Step: step})
		if step == plan.StepStarting {
			running = "1.1.6"
		}
		if c.register(ctx) || asked != 1 {
			t.Fatalf("while %s: register went ahead (host asked %d times)", step, asked)
		}
	}
	verified := plan.HostProgress{Step: plan.StepVerified, Version: "1.1.6"}
	c.Report("p", verified)
	if c.register(ctx) || asked != 1 {
		t.Fatalf("registered before the verified report was in the state (host asked %d times)", asked)
	}
	// The leader took it (delivered), but this daemon's copy of the state does
	// not hold it yet.
	sent := c.pending["p"]
	c.delivered("p", sent)
	if c.register(ctx) || asked != 1 {
		t.Fatalf("registered before this daemon's state held the verified report (host asked %d times)", asked)
	}
	if res := fsm.Apply(&raft.Log{Index: 99, Data: plan.Command{Op: plan.OpProgress, PlanID: "p", HostID: "h0", Progress: &sent}.Encode(), AppendedAt: now}); res != nil {
		t.Fatalf("progress: %v", res)
	}
	if !c.register(ctx) || asked != 2 {
		t.Fatalf("after the outage: register did not resume (host asked %d times)", asked)
	}

	// A plan that ends during the outage (aborted, timed out) releases it.
	c.Report("p", plan.HostProgress{Step: plan.StepStarting})
	if c.register(ctx) {
		t.Fatal("registered during the outage")
	}
	if res := fsm.Apply(&raft.Log{Index: 100, Data: plan.Command{Op: plan.OpAbort, PlanID: "p", Signer: "op"}.Encode(), AppendedAt: now}); res != nil {
		t.Fatalf("abort: %v", res)
	}
	if !c.register(ctx) || asked != 3 {
		t.Fatalf("after the plan ended: register did not resume (host asked %d times)", asked)
	}
}
