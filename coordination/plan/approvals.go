package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/upgraded/upgraded/coordination/envelope"
)

// Envelope types of the signed messages the plan state checks itself.
const (
	AnnounceType = "upgraded/announcement/v1"
	ApprovalType = "upgraded/approval/v1"
)

// Errors of the two-person rule.
var (
	ErrPolicyMismatch = errors.New("hosts disagree on who may start a plan")
	ErrNotProposed    = errors.New("plan is not waiting for approvals")
	ErrBadApproval    = errors.New("approval refused")
)

// Policy says which operator keys may start a plan and how many of them must
// sign it. It is part of every host's record and must be the same on all.
type Policy struct {
	Trusted   []string `json:"trusted"`   // peer IDs, sorted
	Threshold int      `json:"threshold"` // approvals needed (at least 1)
	// Windows are the maintenance windows (UTC) in which a plan may start;
	// none: any time.
	Windows []string `json:"windows,omitempty"`
}

// NewPolicy normalises a policy (sorted, deduplicated, threshold at least 1).
func NewPolicy(trusted []string, threshold int) Policy {
	t := slices.Clone(trusted)
	sort.Strings(t)
	t = slices.Compact(t)
	return Policy{Trusted: t, Threshold: max(threshold, 1)}
}

// WithWindows returns the policy with maintenance windows.
func (p Policy) WithWindows(ws []string) Policy {
	p.Windows = slices.Clone(ws)
	return p
}

// Equal reports whether two policies are the same.
func (p Policy) Equal(o Policy) bool {
	return max(p.Threshold, 1) == max(o.Threshold, 1) && slices.Equal(p.Trusted, o.Trusted) && slices.Equal(p.Windows, o.Windows)
}

// String describes a policy for an operator.
func (p Policy) String() string {
	s := fmt.Sprintf("%d of %d keys", max(p.Threshold, 1), len(p.Trusted))
	if len(p.Windows) > 0 {
		s += ", windows " + strings.Join(p.Windows, "; ")
	}
	return s
}

// Trusts reports whether id is one of the policy's keys.
func (p Policy) Trusts(id string) bool { return slices.Contains(p.Trusted, id) }

// Approval is one operator's signature on a plan's content.
type Approval struct {
	Signer   string    `json:"signer"`
	At       time.Time `json:"at"`
	Envelope []byte    `json:"envelope"` // the signed message itself, for anyone to check
}

// ApprovalPayload is what an approver signs.
type ApprovalPayload struct {
	PlanID   string `json:"plan_id"`
	Content  string `json:"content_sha256"` // ContentHash of the announcement approved
	Decision string `json:"decision"`       // "approve" or "reject"
}

// ContentHash is the sha256 of an announcement's content: everything an
// approver agrees to (id, version, artifacts and their sha256s, procedure,
// options, expiry).
func ContentHash(a *Announcement) string {
	b, err := json.Marshal(a)
	if err != nil {
		panic(fmt.Sprintf("encoding announcement: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ClusterPolicy is the policy most hosts hold (ties: the smallest by text),
// against which a host that differs is reported.
func (s *State) ClusterPolicy() (Policy, bool) {
	count := map[string]int{}
	byKey := map[string]Policy{}
	for _, h := range s.Hosts {
		k := h.Policy.String() + "|" + strings.Join(h.Policy.Trusted, ",")
		count[k]++
		byKey[k] = h.Policy
	}
	best := ""
	for k, n := range count {
		if best == "" || n > count[best] || n == count[best] && k < best {
			best = k
		}
	}
	p, ok := byKey[best]
	return p, ok
}

// policyOf returns the policy every host of ids holds, or why they disagree.
func (s *State) policyOf(ids []string) (Policy, error) {
	cluster, _ := s.ClusterPolicy()
	var odd []string
	for _, id := range ids {
		if h, ok := s.Hosts[id]; ok && !h.Policy.Equal(cluster) {
			odd = append(odd, fmt.Sprintf("%s refuses to take part: it requires %s, the cluster %s", h.label(), h.Policy, cluster))
		}
	}
	sort.Strings(odd)
	if len(odd) > 0 {
		return Policy{}, fmt.Errorf("%w: %s", ErrPolicyMismatch, strings.Join(odd, "; "))
	}
	return cluster, nil
}

// recordProposer checks the signed announcement and counts it as the first
// approval; with a threshold above one the plan waits in PhaseProposed.
func (p *Plan) recordProposer(c Command, at time.Time) error {
	p.Approvals = map[string]Approval{}
	if c.Envelope == nil {
		if p.Policy.Threshold > 1 {
			return fmt.Errorf("%w: a plan needing %d approvals must carry the proposer's signature", ErrBadApproval, p.Policy.Threshold)
		}
		p.begin(at)
		return nil
	}
	payload, signer, err := envelope.Open(c.Envelope, AnnounceType, nil)
	if err != nil {
		return fmt.Errorf("%w: proposer's signature: %w", ErrBadApproval, err)
	}
	var a Announcement
	if err := json.Unmarshal(payload, &a); err != nil || ContentHash(&a) != ContentHash(&p.Announcement) {
		return fmt.Errorf("%w: the signed announcement is not the proposed content", ErrBadApproval)
	}
	if len(p.Policy.Trusted) > 0 && !p.Policy.Trusts(signer.String()) {
		return fmt.Errorf("%w: %s is not a trusted key", ErrBadApproval, signer)
	}
	p.Signer = signer.String()
	p.Approvals[p.Signer] = Approval{Signer: p.Signer, At: at, Envelope: c.Envelope}
	if len(p.Approvals) < p.Policy.Threshold {
		p.setPhase(PhaseProposed, at)
		p.Deadline = p.ExpiresAt
		return nil
	}
	p.begin(at)
	return nil
}

// OpenApproval checks a signed approval against the state: a proposed plan,
// not expired, the same content, a trusted key. It changes nothing.
func (s *State) OpenApproval(data []byte, at time.Time) (*Plan, ApprovalPayload, string, error) {
	var ap ApprovalPayload
	payload, signer, err := envelope.Open(data, ApprovalType, nil)
	if err != nil {
		return nil, ap, signer.String(), fmt.Errorf("%w: %w", ErrBadApproval, err)
	}
	if err := json.Unmarshal(payload, &ap); err != nil {
		return nil, ap, signer.String(), fmt.Errorf("%w: malformed: %w", ErrBadApproval, err)
	}
	p, ok := s.Plans[ap.PlanID]
	switch {
	case !ok:
		return nil, ap, signer.String(), fmt.Errorf("%w: %s", ErrNoPlan, ap.PlanID)
	case ap.Decision != "approve" && ap.Decision != "reject":
		return p, ap, signer.String(), fmt.Errorf("%w: decision %q", ErrBadApproval, ap.Decision)
	case p.Phase != PhaseProposed:
		return p, ap, signer.String(), fmt.Errorf("%w: plan %s is %s", ErrNotProposed, p.ID, p.Phase)
	case !at.Before(p.ExpiresAt):
		return p, ap, signer.String(), fmt.Errorf("%w: proposal %s expired at %s", ErrExpired, p.ID, p.ExpiresAt.UTC().Format(time.RFC3339))
	case ap.Content != ContentHash(&p.Announcement):
		return p, ap, signer.String(), fmt.Errorf("%w: it signs other content than plan %s (version, artifacts or options differ)", ErrBadApproval, p.ID)
	case !p.Policy.Trusts(signer.String()):
		return p, ap, signer.String(), fmt.Errorf("%w: %s is not one of the plan's trusted keys", ErrBadApproval, signer)
	}
	return p, ap, signer.String(), nil
}

func (s *State) approve(c Command, at time.Time) error {
	p, ap, signer, err := s.OpenApproval(c.Envelope, at)
	if err != nil {
		return err
	}
	if ap.Decision == "reject" {
		p.Approvals[signer] = Approval{Signer: signer, At: at, Envelope: c.Envelope}
		s.end(p, PhaseFailed, "withdrawn: rejected by "+signer, at)
		return nil
	}
	if _, dup := p.Approvals[signer]; dup {
		return nil // the same key twice still counts once
	}
	p.Approvals[signer] = Approval{Signer: signer, At: at, Envelope: c.Envelope}
	p.Updated = at
	if len(p.Approvals) >= p.Policy.Threshold {
		p.Reason = fmt.Sprintf("approved by %d of %d required keys", len(p.Approvals), p.Policy.Threshold)
		p.begin(at)
	}
	return nil
}

// Missing is how many approvals the plan still needs.
func (p *Plan) Missing() int { return max(p.Policy.Threshold-len(p.Approvals), 0) }
