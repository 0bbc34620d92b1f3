package plan

import (
	"strings"
	"testing"
	"time"
)

func TestWindows(t *testing.T) {
	// 2026-11-24 is a Tuesday.
	at := func(day int, hh, mm int) time.Time { return time.Date(2026, 11, day, hh, mm, 0, 0, time.UTC) }
	cases := []struct {
		window string
		t      time.Time
		in     bool
	}{
		{"Mon-Fri 02:00-05:00", at(24, 3, 0), true},
		{"Mon-Fri 02:00-05:00", at(24, 5, 0), false},
		{"Mon-Fri 02:00-05:00", at(28, 3, 0), false}, // Saturday
		{"Sat,Sun 00:00-23:59", at(29, 12, 0), true},
		{"* 22:00-02:00", at(24, 23, 30), true},
		{"* 22:00-02:00", at(25, 1, 30), true},
		{"Tue 22:00-02:00", at(25, 1, 30), true}, // Wednesday morning belongs to Tuesday night
		{"Wed 22:00-02:00", at(25, 1, 30), false},
	}
	for _, tc := range cases {
		w, err := ParseWindow(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Contains(tc.t); got != tc.in {
			t.Errorf("%s contains %s: %v, want %v", tc.window, tc.t.Format(time.RFC1123), got, tc.in)
		}
	}
	for _, bad := range []string{"Mon-Fri", "Funday 01:00-02:00", "Mon 25:00-26:00", "Mon 01:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	next, ok := NextStart([]string{"Mon-Fri 02:00-05:00"}, at(24, 6, 0))
	if !ok || !next.Equal(at(25, 2, 0)) {
		t.Fatalf("next start %s, want Wednesday 02:00", next)
	}
}

func TestPlanOutsideItsWindowWaits(t *testing.T) {
	s := NewState()
	policy := NewPolicy(nil, 1).WithWindows([]string{"* 02:00-05:00"})
	_ = s.Apply(Command{Op: OpRegister, Host: &Host{ID: "A", Version: "1.0.8", Policy: policy}}, t0)
	a := announcement("p", "1.1.6") // t0 is 12:00 UTC: outside the window
	a.ExpiresAt = t0.Add(24 * time.Hour)
	if err := s.Apply(Command{Op: OpPropose, Announcement: a}, t0); err != nil {
		t.Fatal(err)
	}
	p := s.Plans["p"]
	if p.Phase != PhaseScheduled || p.NotBefore.Hour() != 2 {
		t.Fatalf("want scheduled for 02:00, got %s %s", p.Phase, p.NotBefore)
	}
	_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhaseScheduled}, t0.Add(time.Hour))
	if p.Phase != PhaseScheduled {
		t.Fatal("started before its window")
	}
	_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhaseScheduled}, p.NotBefore)
	if p.Phase != PhasePreparing {
		t.Fatalf("did not start at its window: %s", p.Phase)
	}
	// --at later than now schedules too.
	s2 := threeHosts(t)
	b := announcement("q", "1.1.6")
	b.At = t0.Add(10 * time.Minute)
	_ = s2.Apply(Command{Op: OpPropose, Announcement: b}, t0)
	if q := s2.Plans["q"]; q.Phase != PhaseScheduled || !q.NotBefore.Equal(b.At) {
		t.Fatalf("--at: %s %s", q.Phase, q.NotBefore)
	}
	if !strings.Contains(policy.String(), "02:00-05:00") {
		t.Fatal("the policy's description must show its windows")
	}
}
