package plan

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func announcement(id, version string) *Announcement {
	return &Announcement{ID: id, Version: version, Procedure: Standard,
		Artifacts: []Artifact{{Source: "/tmp/x.tar.gz", SHA256: strings.Repeat("ab", 32)}},
		IssuedAt:  t0, ExpiresAt: t0.Add(time.Hour)}
}

func threeHosts(t *testing.T) *State {
	t.Helper()
	s := NewState()
	for _, id := range []string{"A", "B", "C"} {
		if err := s.Apply(Command{Op: OpRegister, Host: &Host{ID: id, ClusterPeer: "c" + id, Version: "1.0.8"}}, t0); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func progress(t *testing.T, s *State, plan, host string, step Step, errText string, at time.Time) {
	t.Helper()
	err := s.Apply(Command{Op: OpProgress, PlanID: plan, HostID: host,
		Progress: &HostProgress{Step: step, Error: errText, Version: "x"}}, at)
	if err != nil {
		t.Fatalf("progress %s %s: %v", host, step, err)
	}
}

func TestProposeRefusals(t *testing.T) {
	cases := []struct {
		name  string
		setup func(s *State)
		ann   *Announcement
		at    time.Time
		want  error
	}{
		{"accepted", nil, announcement("p1", "1.1.6"), t0, nil},
		{"downgrade", nil, announcement("p1", "1.0.7"), t0, ErrDowngrade},
		{"downgrade allowed", nil, func() *Announcement { a := announcement("p1", "1.0.7"); a.AllowDowngrade = true; return a }(), t0, nil},
		{"expired", nil, announcement("p1", "1.1.6"), t0.Add(2 * time.Hour), ErrExpired},
		{"replayed", func(s *State) {
			_ = s.Apply(Command{Op: OpPropose, Announcement: announcement("p1", "1.1.6")}, t0)
		}, announcement("p1", "1.1.6"), t0, ErrReplayed},
		{"replay of a refused one", func(s *State) {
			_ = s.Apply(Command{Op: OpReject, Announcement: announcement("p1", "1.1.6"), Reason: "no"}, t0)
		}, announcement("p1", "1.1.6"), t0, ErrReplayed},
		{"second plan while one runs", func(s *State) {
			_ = s.Apply(Command{Op: OpPropose, Announcement: announcement("p0", "1.1.5")}, t0)
		}, announcement("p1", "1.1.6"), t0, ErrPlanActive},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := threeHosts(t)
			if tc.setup != nil {
				tc.setup(s)
			}
			err := s.Apply(Command{Op: OpPropose, Announcement: tc.ann}, tc.at)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMalformedAnnouncements(t *testing.T) {
	bad := []func(a *Announcement){
		func(a *Announcement) { a.ID = "" },
		func(a *Announcement) { a.Version = "" },
		func(a *Announcement) { a.Artifacts = nil },
		func(a *Announcement) { a.Artifacts[0].SHA256 = "abc" },
		func(a *Announcement) { a.Procedure = "yolo" },
		func(a *Announcement) { a.ExpiresAt = a.IssuedAt },
	}
	for i, mutate := range bad {
		s := threeHosts(t)
		a := announcement("p", "1.1.6")
		mutate(a)
		if err := s.Apply(Command{Op: OpPropose, Announcement: a}, t0); err == nil {
			t.Errorf("case %d: malformed announcement accepted", i)
		}
		if s.Current != "" {
			t.Errorf("case %d: refused announcement changed the state", i)
		}
	}
}

func TestStandardHappyPath(t *testing.T) {
	s := threeHosts(t)
	if err := s.Apply(Command{Op: OpPropose, Announcement: announcement("p", "1.1.6")}, t0); err != nil {
		t.Fatal(err)
	}
	p := s.Plans["p"]
	progress(t, s, "p", "A", StepPrepared, "", t0.Add(time.Second))
	progress(t, s, "p", "B", StepPrepared, "", t0.Add(time.Second))
	if p.Phase != PhasePreparing {
		t.Fatalf("switched before every host was prepared: %s", p.Phase)
	}
	progress(t, s, "p", "C", StepPrepared, "", t0.Add(2*time.Second))
	if p.Phase != PhaseSwitching || !p.Arming() || !p.SwitchAt.IsZero() {
		t.Fatalf("want switching without a time yet (arming), got %s at %s", p.Phase, p.SwitchAt)
	}
	if err := s.Apply(Command{Op: OpArm, PlanID: "p"}, t0.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if p.Arming() || !p.SwitchAt.Equal(t0.Add(3*time.Second+p.Timeouts.Barrier)) ||
		!p.Deadline.Equal(p.SwitchAt.Add(p.Timeouts.Switch)) {
		t.Fatalf("want the switch at the arm's time plus the barrier, got %s (deadline %s)", p.SwitchAt, p.Deadline)
	}
	if err := s.Apply(Command{Op: OpArm, PlanID: "p"}, t0.Add(4*time.Second)); err == nil || !p.SwitchAt.Equal(t0.Add(3*time.Second+p.Timeouts.Barrier)) {
		t.Fatalf("a second arm was taken (%v): switch at %s", err, p.SwitchAt)
	}
	for _, h := range []string{"A", "B", "C"} {
		progress(t, s, "p", h, StepVerified, "", t0.Add(3*time.Second))
	}
	if p.Phase != PhaseDone || s.Current != "" || !p.Succeeded() {
		t.Fatalf("want done, got %s (current %q)", p.Phase, s.Current)
	}
	if s.Hosts["A"].Version != "x" {
		t.Fatalf("host version not recorded after verification: %q", s.Hosts["A"].Version)
	}
}

func TestFailures(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, s *State)
		want Phase
	}{
		{"prepare fails -> failed, nothing stopped", func(t *testing.T, s *State) {
			progress(t, s, "p", "A", StepFailed, "sha256 mismatch", t0)
		}, PhaseFailed},
		{"prepare deadline -> failed", func(t *testing.T, s *State) {
			progress(t, s, "p", "A", StepPrepared, "", t0)
			_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhasePreparing}, t0.Add(11*time.Minute))
		}, PhaseFailed},
		{"early timeout is ignored", func(t *testing.T, s *State) {
			_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhasePreparing}, t0.Add(time.Minute))
		}, PhasePreparing},
		{"switch failure -> rolling back", func(t *testing.T, s *State) {
			prepareAll(t, s)
			progress(t, s, "p", "A", StepVerified, "", t0)
			progress(t, s, "p", "B", StepFailed, "short pinset", t0)
		}, PhaseRollingBack},
		{"arm before every host is prepared -> refused, nothing changes", func(t *testing.T, s *State) {
			progress(t, s, "p", "A", StepPrepared, "", t0)
			if err := s.Apply(Command{Op: OpArm, PlanID: "p"}, t0); err == nil {
				t.Fatal("arm taken while preparing")
			}
		}, PhasePreparing},
		{"switch deadline while arming -> failed, nothing stopped", func(t *testing.T, s *State) {
			for _, h := range []string{"A", "B", "C"} {
				progress(t, s, "p", h, StepPrepared, "", t0)
			}
			_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhaseSwitching}, t0.Add(time.Hour))
		}, PhaseFailed},
		{"switch deadline -> rolling back", func(t *testing.T, s *State) {
			prepareAll(t, s)
			_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhaseSwitching}, t0.Add(time.Hour))
		}, PhaseRollingBack},
		{"rollback completes", func(t *testing.T, s *State) {
			prepareAll(t, s)
			progress(t, s, "p", "B", StepFailed, "boom", t0)
			for _, h := range []string{"A", "B", "C"} {
				progress(t, s, "p", h, StepRolledBack, "", t0)
			}
		}, PhaseRolledBack},
		{"rollback fails on one host", func(t *testing.T, s *State) {
			prepareAll(t, s)
			progress(t, s, "p", "B", StepFailed, "boom", t0)
			progress(t, s, "p", "A", StepRolledBack, "", t0)
			progress(t, s, "p", "B", StepRollbackErr, "old version does not start", t0)
			progress(t, s, "p", "C", StepRolledBack, "", t0)
		}, PhaseRollbackFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := threeHosts(t)
			if err := s.Apply(Command{Op: OpPropose, Announcement: announcement("p", "1.1.6")}, t0); err != nil {
				t.Fatal(err)
			}
			tc.run(t, s)
			if got := s.Plans["p"].Phase; got != tc.want {
				t.Fatalf("phase %s, want %s (reason %q)", got, tc.want, s.Plans["p"].Reason)
			}
			if tc.want.Terminal() != (s.Current == "") {
				t.Fatalf("current plan %q does not match phase %s", s.Current, tc.want)
			}
		})
	}
}

// prepareAll prepares every host of plan "p", and arms its switch when
// the plan waits for that (a standard plan).
func prepareAll(t *testing.T, s *State) {
	t.Helper()
	for _, h := range []string{"A", "B", "C"} {
		progress(t, s, "p", h, StepPrepared, "", t0)
	}
	if s.Plans["p"].Arming() {
		if err := s.Apply(Command{Op: OpArm, PlanID: "p"}, t0); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProgressAfterEndIsRefused(t *testing.T) {
	s := threeHosts(t)
	_ = s.Apply(Command{Op: OpPropose, Announcement: announcement("p", "1.1.6")}, t0)
	progress(t, s, "p", "A", StepFailed, "x", t0)
	err := s.Apply(Command{Op: OpProgress, PlanID: "p", HostID: "B", Progress: &HostProgress{Step: StepPrepared}}, t0)
	if err == nil {
		t.Fatal("progress accepted on an ended plan")
	}
}

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.1.6", "1.0.8", 1}, {"0.14.5", "1.0.0", -1}, {"v1.0.8", "1.0.8", 0},
		{"1.2.0-rc1", "1.2.0", -1}, {"1.10.0", "1.9.9", 1}, {"1.1", "1.1.0", 0}, {"1.1.6+git", "1.1.6", 0},
	}
	for _, tc := range cases {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// A host's report that arrives after a later one (pubsub does not keep order)
// must not move the host back.
func TestLateProgressIsIgnored(t *testing.T) {
	s := threeHosts(t)
	if err := s.Apply(Command{Op: OpPropose, Announcement: announcement("p1", "1.1.6")}, t0); err != nil {
		t.Fatal(err)
	}
	report := func(step Step, seq int64) {
		t.Helper()
		if err := s.Apply(Command{Op: OpProgress, PlanID: "p1", HostID: "A",
			Progress: &HostProgress{Step: step, Seq: seq}}, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	report(StepPreparing, 10)
	report(StepPrepared, 20)
	report(StepPreparing, 15) // late
	if got := s.Plans["p1"].Hosts["A"].Step; got != StepPrepared {
		t.Fatalf("host A is %s after a late report, want %s", got, StepPrepared)
	}
	report(StepPreparing, 0) // unordered reports still apply
	if got := s.Plans["p1"].Hosts["A"].Step; got != StepPreparing {
		t.Fatalf("a report without order was ignored: host A is %s", got)
	}
}

func TestBarrierGrowsWithTheHosts(t *testing.T) {
	base := DefaultTimeouts()
	for n, want := range map[int]time.Duration{1: base.Barrier, 3: base.Barrier, 4: base.Barrier + BarrierPerHost, 50: base.Barrier + 47*BarrierPerHost} {
		got := base.ForHosts(n)
		if got.Barrier != want {
			t.Errorf("%d hosts: barrier %s, want %s", n, got.Barrier, want)
		}
		if got.Prepare != base.Prepare || got.Switch != base.Switch || got.Rollback != base.Rollback {
			t.Errorf("%d hosts: other timeouts changed: %+v", n, got)
		}
	}
}
