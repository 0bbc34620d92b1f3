package plan

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func rollingState(t *testing.T, consensus string, a *Announcement, rpcFrom, rpcTo string) (*State, *Plan) {
	t.Helper()
	s := NewState()
	for _, id := range []string{"A", "B", "C"} {
		_ = s.Apply(Command{Op: OpRegister, Host: &Host{ID: id, Version: "1.0.8", Consensus: consensus}}, t0)
	}
	if err := s.Apply(Command{Op: OpPropose, Announcement: a}, t0); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"A", "B", "C"} {
		_ = s.Apply(Command{Op: OpProgress, PlanID: a.ID, HostID: id,
			Progress: &HostProgress{Step: StepPrepared, RPCRunning: rpcFrom, RPCStaged: rpcTo}}, t0)
	}
	return s, s.Plans[a.ID]
}

func autoAnnouncement() *Announcement {
	a := announcement("p", "1.1.6")
	a.Procedure = Auto
	return a
}

func TestAutoChoosesFromTheRPCProtocol(t *testing.T) {
	cases := []struct {
		name, consensus, from, to string
		want                      Procedure
	}{
		{"same protocol -> rolling", "crdt", "/ipfscluster/1.0/rpc", "/ipfscluster/1.0/rpc", Rolling},
		{"changed protocol, crdt -> standard", "crdt", "/ipfscluster/0.12/rpc", "/ipfscluster/1.0/rpc", Standard},
		{"changed protocol, raft -> bootstrap", "raft", "/ipfscluster/0.12/rpc", "/ipfscluster/1.0/rpc", Bootstrap},
		{"unknown protocol -> standard", "crdt", "/ipfscluster/1.0/rpc", "", Standard},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, p := rollingState(t, tc.consensus, autoAnnouncement(), tc.from, tc.to)
			if p.Proc() != tc.want || p.ChoiceReason == "" {
				t.Fatalf("chose %s (%q), want %s", p.Proc(), p.ChoiceReason, tc.want)
			}
		})
	}
}

func TestRollingOneAtATimeWithSettle(t *testing.T) {
	a := autoAnnouncement()
	a.Settle = 10 * time.Second
	s, p := rollingState(t, "crdt", a, "x", "x")
	if len(p.Batch) != 1 || p.Tasks["A"] != TaskUpgrade || p.Tasks["B"] != "" {
		t.Fatalf("first batch %v tasks %v", p.Batch, p.Tasks)
	}
	at := t0.Add(time.Second)
	_ = s.Apply(Command{Op: OpProgress, PlanID: "p", HostID: "A", Progress: &HostProgress{Step: StepVerified}}, at)
	if p.Tasks["B"] != "" || !p.NextBatchAt.Equal(at.Add(10*time.Second)) {
		t.Fatalf("B must wait the settle time: tasks %v next %s", p.Tasks, p.NextBatchAt)
	}
	_ = s.Apply(Command{Op: OpTick, PlanID: "p"}, at.Add(5*time.Second))
	if p.Tasks["B"] != "" {
		t.Fatal("an early tick started the next batch")
	}
	_ = s.Apply(Command{Op: OpTick, PlanID: "p"}, at.Add(10*time.Second))
	if p.Tasks["B"] != TaskUpgrade || p.Tasks["C"] != "" {
		t.Fatalf("after the settle time B goes, alone: %v", p.Tasks)
	}
}

func TestRaftKeepsAMajority(t *testing.T) {
	a := autoAnnouncement()
	a.MaxUnavailable = 3
	_, p := rollingState(t, "raft", a, "x", "x")
	if p.BatchSize != 1 || len(p.Batch) != 1 || !strings.Contains(p.ChoiceReason, "majority") {
		t.Fatalf("3 raft peers allow 1 down at a time: size %d batch %v (%s)", p.BatchSize, p.Batch, p.ChoiceReason)
	}
}

func TestCanaryFailureRollsBackAndTheVersionIsRemembered(t *testing.T) {
	a := autoAnnouncement()
	a.Canary, a.Soak = 1, time.Minute
	s, p := rollingState(t, "crdt", a, "x", "x")
	_ = s.Apply(Command{Op: OpProgress, PlanID: "p", HostID: "A", Progress: &HostProgress{Step: StepVerified}}, t0)
	_ = s.Apply(Command{Op: OpProgress, PlanID: "p", HostID: "A", Progress: &HostProgress{Step: StepFailed, Error: "unhealthy during soak"}}, t0.Add(30*time.Second))
	if p.Phase != PhaseRollingBack || p.Tasks["B"] != "" || p.Tasks["C"] != "" {
		t.Fatalf("a failed canary rolls back before the rest are touched: %s %v", p.Phase, p.Tasks)
	}
	for _, id := range []string{"A", "B", "C"} {
		_ = s.Apply(Command{Op: OpProgress, PlanID: "p", HostID: id, Progress: &HostProgress{Step: StepRolledBack}}, t0.Add(time.Minute))
	}
	if p.Phase != PhaseRolledBack {
		t.Fatalf("phase %s", p.Phase)
	}
	again := announcement("p2", "1.1.6")
	if err := s.CheckAnnouncement(again, t0); !errors.Is(err, ErrFailedVersion) {
		t.Fatalf("a rolled-back version must be refused: %v", err)
	}
	again.AllowFailedVersion = true
	if err := s.CheckAnnouncement(again, t0); err != nil {
		t.Fatalf("--allow-failed-version: %v", err)
	}
}
