package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// onePlan is a plan state holding one plan, changed by the test.
type onePlan struct {
	mu   sync.Mutex
	p    *plan.Plan
	subs []chan struct{}
}

func (o *onePlan) Plan(id string) *plan.Plan {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.p == nil || o.p.ID != id {
		return nil
	}
	return o.p.Clone()
}

func (o *onePlan) Latest() *plan.Plan {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.p.Clone()
}

func (o *onePlan) View(fn func(*plan.State)) { fn(plan.NewState()) }

func (o *onePlan) Subscribe() (<-chan struct{}, func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ch := make(chan struct{}, 1)
	o.subs = append(o.subs, ch)
	return ch, func() {}
}

func (o *onePlan) set(step plan.Step) {
	o.mu.Lock()
	o.p.Hosts["me"].Step = step
	subs := o.subs
	o.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type countingReporter struct{ n atomic.Int32 }

func (r *countingReporter) Report(string, plan.HostProgress) { r.n.Add(1) }

// A host whose verification is done but whose "verified" report has not
// reached the plan state yet waits for the state: it does not run its
// switch again and again (each run finding the work done in its journal
// and reporting once more) until the leader applies the report.
func TestAgentDoesNotRepeatAnEndedTaskBeforeTheStateMoves(t *testing.T) {
	j, err := OpenJournal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{jPrepare, jStop, jStart, jVerify} {
		if err := j.Done("p1", step, map[string]string{"pins": "3"}); err != nil {
			t.Fatal(err)
		}
	}
	src := &onePlan{p: &plan.Plan{Announcement: plan.Announcement{ID: "p1", Version: "1.1.6", Procedure: plan.Standard},
		Phase: plan.PhaseSwitching, SwitchAt: time.Now().Add(-time.Minute), Hosts: map[string]*plan.HostProgress{"me": {Step: plan.StepStarting}}}}
	rep := &countingReporter{}
	a := &Agent{log: zap.NewNop(), last: map[string]plan.HostProgress{},
		cfg: Config{HostID: "me", Journal: j, Plans: src, Reporter: rep, Runner: runningPeer{}, PollInterval: 5 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() { ended <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ended; err != nil {
			t.Error(err)
		}
	}()

	deadline := time.Now().Add(5 * time.Second)
	for rep.n.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the report is on its way to the leader
	if n := rep.n.Load(); n != 1 {
		t.Fatalf("%d reports while the state still showed the host starting, want 1: the ended switch ran again", n)
	}
	src.set(plan.StepVerified) // the leader applied it: nothing left to do
	time.Sleep(100 * time.Millisecond)
	if n := rep.n.Load(); n != 1 {
		t.Fatalf("%d reports after the state showed the host verified, want 1", n)
	}
}
