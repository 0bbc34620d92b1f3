package plan

import (
	"strings"
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
		name      string
		scheduled bool
		prepare   bool
		want      Phase
	}{
		{"while scheduled: failed, it never starts", true, false, PhaseFailed},
		{"during prepare: failed, nothing stopped", false, false, PhaseFailed},
		{"during the switch: clean rollback", false, true, PhaseRollingBack},
		{"while the switch is arming: failed, nothing stopped", false, false, PhaseFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := threeHosts(t)
			a := announcement("p", "1.1.6")
			if tc.scheduled {
				a.At = t0.Add(30 * time.Minute)
			}
			_ = s.Apply(Command{Op: OpPropose, Announcement: a}, t0)
			if p := s.Plans["p"]; tc.scheduled && p.Phase != PhaseScheduled {
				t.Fatalf("a plan for later is %s, want scheduled", p.Phase)
			}
			if tc.prepare {
				prepareAll(t, s)
			}
			if strings.Contains(tc.name, "arming") {
				for _, h := range []string{"A", "B", "C"} {
					progress(t, s, "p", h, StepPrepared, "", t0)
				}
				if !s.Plans["p"].Arming() {
					t.Fatalf("plan %s, want arming", s.Plans["p"].Phase)
				}
			}
			if err := s.Apply(Command{Op: OpAbort, PlanID: "p", Reason: "host B"}, t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if p := s.Plans["p"]; p.Phase != tc.want || p.Control == "" {
				t.Fatalf("phase %s (%s), want %s", p.Phase, p.Control, tc.want)
			}
			// Its start time passing changes nothing once it was aborted.
			_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhaseScheduled}, t0.Add(31*time.Minute))
			if p := s.Plans["p"]; p.Phase != tc.want {
				t.Fatalf("after its start time an aborted plan is %s, want %s", p.Phase, tc.want)
			}
		})
	}
}
