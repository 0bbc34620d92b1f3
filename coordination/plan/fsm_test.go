package plan

import (
	"bytes"
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// logApplier feeds commands to an FSM as raft log entries of rising index.
type logApplier struct {
	t     *testing.T
	f     *FSM
	index uint64
}

// try applies c and returns the FSM's answer (nil, or why it refused c).
func (a *logApplier) try(c Command) any {
	a.index++
	return a.f.Apply(&raft.Log{Index: a.index, Data: c.Encode(), AppendedAt: t0})
}

// apply applies c and fails the test if the FSM refuses it.
func (a *logApplier) apply(c Command) {
	a.t.Helper()
	if res := a.try(c); res != nil {
		a.t.Fatalf("%s: %v", c.Op, res)
	}
}

func TestLatestIsThePlanInProgressElseTheLastOne(t *testing.T) {
	f := NewFSM(zap.NewNop())
	apply := (&logApplier{t: t, f: f}).apply
	if p := f.Latest(); p != nil {
		t.Fatalf("no plan yet, Latest gave %s", p.ID)
	}
	for _, id := range []string{"A", "B"} {
		apply(Command{Op: OpRegister, Host: &Host{ID: id, ClusterPeer: "c" + id, Version: "1.0.8"}})
	}
	apply(Command{Op: OpPropose, Announcement: announcement("p1", "1.1.6")})
	p := f.Latest()
	if p == nil || p.ID != "p1" || p.Phase != PhasePreparing {
		t.Fatalf("plan in progress: got %+v", p)
	}
	p.Hosts["A"].Step = StepVerified // a reader's copy must not reach the state
	if f.Latest().Hosts["A"].Step == StepVerified {
		t.Fatal("Latest handed out the state's own plan, not a copy")
	}
	apply(Command{Op: OpProgress, PlanID: "p1", HostID: "A", Progress: &HostProgress{Step: StepFailed, Error: "disk full"}})
	p = f.Latest()
	if p == nil || p.ID != "p1" || !p.Phase.Terminal() {
		t.Fatalf("after the plan ended: got %+v", p)
	}
}

// The observer learns which plan each applied command named: the history
// looks at that plan only, so a command that changed another plan unseen
// would be lost from it.
func TestObserverIsToldThePlanOfEachCommand(t *testing.T) {
	f := NewFSM(zap.NewNop())
	var got []string
	f.Observe(func(s *State, plan string) {
		if _, ok := s.Plans[plan]; plan != "" && !ok {
			t.Errorf("observer told of plan %q, which the state lacks", plan)
		}
		got = append(got, plan)
	})
	log := &logApplier{t: t, f: f}
	apply := log.apply
	apply(Command{Op: OpRegister, Host: &Host{ID: "A", ClusterPeer: "cA", Version: "1.0.8"}})
	apply(Command{Op: OpPropose, Announcement: announcement("p1", "1.1.6")})
	apply(Command{Op: OpProgress, PlanID: "p1", HostID: "A", Progress: &HostProgress{Step: StepPrepared}})
	// A refused command changed nothing: no observation.
	if res := log.try(Command{Op: OpProgress, PlanID: "nope", HostID: "A", Progress: &HostProgress{Step: StepPrepared}}); res == nil {
		t.Fatal("progress of an unknown plan was accepted")
	}
	if want := []string{"p1", "p1"}; !slices.Equal(got, want) {
		t.Fatalf("observer saw plans %q, want %q: the registration names none", got, want)
	}
	// A snapshot replaces the whole state: any plan may be new.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{""}) {
		t.Fatalf("after a restore the observer saw %q, want one look at every plan", got)
	}
}

type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }
