package plan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/upgraded/upgraded/coordination/envelope"
)

type operator struct {
	key crypto.PrivKey
	id  string
}

func newOperator(t *testing.T) operator {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return operator{key: k, id: id.String()}
}

func (o operator) sealAnnouncement(t *testing.T, a *Announcement) []byte {
	t.Helper()
	b, _ := json.Marshal(a)
	env, err := envelope.Seal(o.key, AnnounceType, b)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (o operator) sealDecision(t *testing.T, planID string, a *Announcement, decision string) []byte {
	t.Helper()
	b, _ := json.Marshal(ApprovalPayload{PlanID: planID, Content: ContentHash(a), Decision: decision})
	env, err := envelope.Seal(o.key, ApprovalType, b)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// twoOfThree is a 3-host state where every host requires 2 of 3 operator keys.
func twoOfThree(t *testing.T) (*State, []operator) {
	t.Helper()
	ops := []operator{newOperator(t), newOperator(t), newOperator(t)}
	policy := NewPolicy([]string{ops[0].id, ops[1].id, ops[2].id}, 2)
	s := NewState()
	for _, id := range []string{"A", "B", "C"} {
		_ = s.Apply(Command{Op: OpRegister, Host: &Host{ID: id, Version: "1.0.8", Policy: policy}}, t0)
	}
	return s, ops
}

func proposeSigned(t *testing.T, s *State, by operator, a *Announcement) error {
	t.Helper()
	return s.Apply(Command{Op: OpPropose, Announcement: a, Envelope: by.sealAnnouncement(t, a)}, t0)
}

func TestTwoPersonRule(t *testing.T) {
	s, ops := twoOfThree(t)
	a := announcement("p", "1.1.6")
	if err := proposeSigned(t, s, ops[0], a); err != nil {
		t.Fatal(err)
	}
	p := s.Plans["p"]
	if p.Phase != PhaseProposed || p.Missing() != 1 {
		t.Fatalf("one signature must leave the plan proposed: %s, missing %d", p.Phase, p.Missing())
	}
	// The same key again counts once.
	_ = s.Apply(Command{Op: OpApprove, Envelope: ops[0].sealDecision(t, "p", a, "approve")}, t0)
	if p.Phase != PhaseProposed || len(p.Approvals) != 1 {
		t.Fatalf("the same key twice: %s with %d approvals", p.Phase, len(p.Approvals))
	}
	// Altered content (another version, another sha256) is refused.
	other := *a
	other.Version = "1.1.7"
	alteredSum := *a
	alteredSum.Artifacts = []Artifact{{Source: a.Artifacts[0].Source, SHA256: strings.Repeat("cd", 32)}}
	for name, alt := range map[string]*Announcement{"version": &other, "sha256": &alteredSum} {
		err := s.Apply(Command{Op: OpApprove, Envelope: ops[1].sealDecision(t, "p", alt, "approve")}, t0)
		if !errors.Is(err, ErrBadApproval) {
			t.Fatalf("approval of altered %s: %v", name, err)
		}
	}
	// An untrusted key is refused.
	stranger := newOperator(t)
	if err := s.Apply(Command{Op: OpApprove, Envelope: stranger.sealDecision(t, "p", a, "approve")}, t0); !errors.Is(err, ErrBadApproval) {
		t.Fatalf("untrusted approval: %v", err)
	}
	// A forged one (bit flipped) is refused.
	forged := ops[1].sealDecision(t, "p", a, "approve")
	forged[len(forged)/2] ^= 1
	if err := s.Apply(Command{Op: OpApprove, Envelope: forged}, t0); err == nil {
		t.Fatal("forged approval accepted")
	}
	if p.Phase != PhaseProposed || len(p.Approvals) != 1 {
		t.Fatalf("refused approvals changed the plan: %s, %d", p.Phase, len(p.Approvals))
	}
	// A second distinct trusted key starts it.
	if err := s.Apply(Command{Op: OpApprove, Envelope: ops[1].sealDecision(t, "p", a, "approve")}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p.Phase != PhasePreparing || len(p.Approvals) != 2 {
		t.Fatalf("two keys must start the plan: %s with %d", p.Phase, len(p.Approvals))
	}
}

func TestProposalExpiresAndCannotBeApprovedLate(t *testing.T) {
	s, ops := twoOfThree(t)
	a := announcement("p", "1.1.6")
	if err := proposeSigned(t, s, ops[0], a); err != nil {
		t.Fatal(err)
	}
	late := a.ExpiresAt.Add(time.Second)
	if err := s.Apply(Command{Op: OpApprove, Envelope: ops[1].sealDecision(t, "p", a, "approve")}, late); !errors.Is(err, ErrExpired) {
		t.Fatalf("late approval: %v", err)
	}
	_ = s.Apply(Command{Op: OpTimeout, PlanID: "p", Phase: PhaseProposed}, late)
	if p := s.Plans["p"]; p.Phase != PhaseFailed || !strings.Contains(p.Reason, "expired with 1 of 2") {
		t.Fatalf("expired proposal: %s %q", p.Phase, p.Reason)
	}
}

func TestRejectWithdraws(t *testing.T) {
	s, ops := twoOfThree(t)
	a := announcement("p", "1.1.6")
	_ = proposeSigned(t, s, ops[0], a)
	if err := s.Apply(Command{Op: OpApprove, Envelope: ops[2].sealDecision(t, "p", a, "reject")}, t0); err != nil {
		t.Fatal(err)
	}
	p := s.Plans["p"]
	if p.Phase != PhaseFailed || s.Current != "" {
		t.Fatalf("rejected plan: %s, current %q", p.Phase, s.Current)
	}
	if err := s.Apply(Command{Op: OpApprove, Envelope: ops[1].sealDecision(t, "p", a, "approve")}, t0); !errors.Is(err, ErrNotProposed) {
		t.Fatalf("approval after a rejection: %v", err)
	}
}

func TestHostWithAnotherPolicyRefusesToTakePart(t *testing.T) {
	s, ops := twoOfThree(t)
	odd := NewPolicy([]string{ops[0].id, ops[1].id, ops[2].id}, 1)
	_ = s.Apply(Command{Op: OpRegister, Host: &Host{ID: "C", Name: "host-c", Version: "1.0.8", Policy: odd}}, t0)
	err := proposeSigned(t, s, ops[0], announcement("p", "1.1.6"))
	if !errors.Is(err, ErrPolicyMismatch) || !strings.Contains(err.Error(), "host-c refuses to take part") {
		t.Fatalf("want a policy mismatch naming host-c, got %v", err)
	}
	if s.Current != "" {
		t.Fatal("a refused proposal changed the state")
	}
}

func TestThresholdNeedsTheProposersSignature(t *testing.T) {
	s, _ := twoOfThree(t)
	if err := s.Apply(Command{Op: OpPropose, Announcement: announcement("p", "1.1.6")}, t0); !errors.Is(err, ErrBadApproval) {
		t.Fatalf("unsigned proposal under a 2-of-3 policy: %v", err)
	}
}
