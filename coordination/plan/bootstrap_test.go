package plan

import (
	"testing"
	"time"
)

func bootstrapPlan(t *testing.T, pins map[string]int) (*State, *Plan) {
	t.Helper()
	s := threeHosts(t)
	a := announcement("b", "1.1.6")
	a.Procedure = Bootstrap
	if err := s.Apply(Command{Op: OpPropose, Announcement: a}, t0); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"A", "B", "C"} {
		err := s.Apply(Command{Op: OpProgress, PlanID: "b", HostID: h,
			Progress: &HostProgress{Step: StepPrepared, BackupPins: pins[h], Pins: pins[h]}}, t0)
		if err != nil {
			t.Fatal(err)
		}
	}
	return s, s.Plans["b"]
}

func step(t *testing.T, s *State, host string, st Step) {
	t.Helper()
	if err := s.Apply(Command{Op: OpProgress, PlanID: "b", HostID: host, Progress: &HostProgress{Step: st}}, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
}

func wantTasks(t *testing.T, p *Plan, want map[string]Task) {
	t.Helper()
	for h, task := range want {
		if p.Tasks[h] != task {
			t.Fatalf("task of %s = %q, want %q (all: %v)", h, p.Tasks[h], task, p.Tasks)
		}
	}
}

func TestSurvivorIsTheMostCompleteHost(t *testing.T) {
	_, p := bootstrapPlan(t, map[string]int{"A": 9, "B": 10, "C": 10})
	if p.Survivor != "B" {
		t.Fatalf("survivor %s, want B (10 pins, tie with C broken by id)", p.Survivor)
	}
	if p.SurvivorReason == "" {
		t.Fatal("the choice must come with its reason")
	}
	if len(p.Order) != 2 || p.Order[0] != "A" || p.Order[1] != "C" {
		t.Fatalf("order %v, want the least complete first: [A C]", p.Order)
	}
}

func TestBootstrapSequence(t *testing.T) {
	s, p := bootstrapPlan(t, map[string]int{"A": 5, "B": 5, "C": 7})
	// C survives; A and B leave one at a time.
	wantTasks(t, p, map[string]Task{"A": TaskRemove, "B": "", "C": ""})
	step(t, s, "A", StepRemoving)
	wantTasks(t, p, map[string]Task{"A": TaskRemove, "B": ""})
	step(t, s, "A", StepRemoved)
	wantTasks(t, p, map[string]Task{"B": TaskRemove, "C": ""})
	step(t, s, "B", StepRemoved)
	wantTasks(t, p, map[string]Task{"C": TaskUpgrade})
	step(t, s, "C", StepStarting)
	if p.Tasks["A"] != TaskRemove {
		t.Fatal("nobody rejoins before the survivor is verified")
	}
	step(t, s, "C", StepVerified)
	wantTasks(t, p, map[string]Task{"A": TaskRejoin, "B": TaskRemove})
	step(t, s, "A", StepVerified)
	wantTasks(t, p, map[string]Task{"B": TaskRejoin})
	step(t, s, "B", StepLeftOut)
	if p.Phase != PhaseDone || p.Succeeded() {
		t.Fatalf("a left-out host ends the plan done but not succeeded: %s %v", p.Phase, p.Succeeded())
	}
}

func TestBootstrapSurvivorFailureRollsBackSurvivorFirst(t *testing.T) {
	s, p := bootstrapPlan(t, map[string]int{"A": 5, "B": 5, "C": 7})
	step(t, s, "A", StepRemoved)
	step(t, s, "B", StepRemoved)
	step(t, s, "C", StepFailed)
	if p.Phase != PhaseRollingBack {
		t.Fatalf("phase %s, want rolling-back", p.Phase)
	}
	wantTasks(t, p, map[string]Task{"C": TaskRestore})
	step(t, s, "C", StepRolledBack)
	wantTasks(t, p, map[string]Task{"A": TaskRejoinOld})
	step(t, s, "A", StepRolledBack)
	wantTasks(t, p, map[string]Task{"B": TaskRejoinOld})
	step(t, s, "B", StepRolledBack)
	if p.Phase != PhaseRolledBack {
		t.Fatalf("phase %s, want rolled-back", p.Phase)
	}
}

func TestSingleHostIsNeverRemoved(t *testing.T) {
	s := NewState()
	_ = s.Apply(Command{Op: OpRegister, Host: &Host{ID: "A", Version: "1.0.8"}}, t0)
	a := announcement("b", "1.1.6")
	a.Procedure = Bootstrap
	if err := s.Apply(Command{Op: OpPropose, Announcement: a}, t0); err != nil {
		t.Fatal(err)
	}
	_ = s.Apply(Command{Op: OpProgress, PlanID: "b", HostID: "A", Progress: &HostProgress{Step: StepPrepared}}, t0)
	p := s.Plans["b"]
	if p.Survivor != "A" || len(p.Order) != 0 || p.Tasks["A"] != TaskUpgrade {
		t.Fatalf("survivor %q order %v tasks %v", p.Survivor, p.Order, p.Tasks)
	}
}
