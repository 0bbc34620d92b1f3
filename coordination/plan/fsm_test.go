package plan

import (
	"testing"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

func TestLatestIsThePlanInProgressElseTheLastOne(t *testing.T) {
	f := NewFSM(zap.NewNop())
	var index uint64
	apply := func(c Command) {
		t.Helper()
		index++
		if res := f.Apply(&raft.Log{Index: index, Data: c.Encode(), AppendedAt: t0}); res != nil {
			t.Fatalf("%s: %v", c.Op, res)
		}
	}
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
