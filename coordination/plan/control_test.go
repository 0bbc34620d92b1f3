package plan

import (
	"testing"
	"time"
)

func TestPauseHoldsResumeShiftsDeadlines(t *testing.T) {
	s := threeHosts(t)
	_ = s.Apply(Command{Op: OpPropose, Announcement: announcement("p", "1.1.6")}, t0)
	p := s.Plans["p"]
	deadline := p.Deadline
	if err := s.Apply(Command{Op: OpPause, PlanID: "p", Reason: "host A"}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	prepareAll(t, s)
	if p.Phase != PhasePreparing {
		t.Fatalf("a paused plan switched: %s", p.Phase)
	}
	_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhasePreparing}, deadline.Add(time.Hour))
	if p.Phase != PhasePreparing {
		t.Fatalf("a paused plan timed out: %s", p.Phase)
	}
	if err := s.Apply(Command{Op: OpResume, PlanID: "p"}, t0.Add(11*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p.Phase != PhaseSwitching || p.Paused {
		t.Fatalf("resume must let the prepared plan switch: %s paused=%v", p.Phase, p.Paused)
	}
}

func TestAbort(t *testing.T) {
	cases := []struct {
		name    string
		prepare bool
		want    Phase
	}{
		{"during prepare: failed, nothing stopped", false, PhaseFailed},
		{"during the switch: clean rollback", true, PhaseRollingBack},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := threeHosts(t)
			_ = s.Apply(Command{Op: OpPropose, Announcement: announcement("p", "1.1.6")}, t0)
			if tc.prepare {
				prepareAll(t, s)
			}
			if err := s.Apply(Command{Op: OpAbort, PlanID: "p", Reason: "host B"}, t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if p := s.Plans["p"]; p.Phase != tc.want || p.Control == "" {
				t.Fatalf("phase %s (%s), want %s", p.Phase, p.Control, tc.want)
			}
		})
	}
}
