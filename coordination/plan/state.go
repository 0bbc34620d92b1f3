package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Sentinel errors that callers branch on. Apply wraps them with detail.
var (
	ErrPlanActive    = errors.New("another plan is in progress")
	ErrReplayed      = errors.New("announcement already seen")
	ErrExpired       = errors.New("announcement expired")
	ErrDowngrade     = errors.New("target version is older than the running version")
	ErrNoHosts       = errors.New("no hosts registered")
	ErrNoPlan        = errors.New("no such plan")
	ErrNotInPlan     = errors.New("host is not part of the plan")
	ErrFailedVersion = errors.New("version was rolled back before")
)

// Op names a command.
type Op string

const (
	OpRegister Op = "register" // a daemon joins or updates its host record
	OpPropose  Op = "propose"  // the leader proposes a validated announcement as a plan
	OpReject   Op = "reject"   // the leader records why a trusted announcement was refused
	OpProgress Op = "progress" // a host reports a step
	OpTimeout  Op = "timeout"  // the leader saw the current phase's deadline pass
	OpApprove  Op = "approve"  // an operator approves or rejects a proposed plan (signed envelope)
	OpTick     Op = "tick"     // the leader saw a rolling plan's wait (settle, soak) end
	OpPause    Op = "pause"    // an operator holds the plan where it is
	OpResume   Op = "resume"   // an operator lets a paused plan go on
	OpAbort    Op = "abort"    // an operator stops the plan: nothing stopped yet -> failed, else rollback
	OpArm      Op = "arm"      // the leader sets a standard switch's time: every daemon holds the switch
)

// Command is what travels through the raft log.
type Command struct {
	Op           Op            `json:"op"`
	Host         *Host         `json:"host,omitempty"`
	Announcement *Announcement `json:"announcement,omitempty"`
	Signer       string        `json:"signer,omitempty"`
	Timeouts     *Timeouts     `json:"timeouts,omitempty"`
	PlanID       string        `json:"plan_id,omitempty"`
	HostID       string        `json:"host_id,omitempty"`
	Progress     *HostProgress `json:"progress,omitempty"`
	Phase        Phase         `json:"phase,omitempty"`
	Reason       string        `json:"reason,omitempty"`
	HostIDs      []string      `json:"host_ids,omitempty"` // propose: the daemons taking part (default: all registered)
	Envelope     []byte        `json:"envelope,omitempty"` // propose: the signed announcement; approve: the signed approval
}

// Encode serialises a command for the raft log.
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil { // only plain data types: cannot happen
		panic(fmt.Sprintf("encoding plan command: %v", err))
	}
	return b
}

// State is the whole replicated state.
type State struct {
	Hosts    map[string]*Host     `json:"hosts"`
	Plans    map[string]*Plan     `json:"plans"`
	Current  string               `json:"current,omitempty"`  // id of the plan that has not ended, if any
	Last     string               `json:"last,omitempty"`     // id of the most recent plan
	Rejected map[string]Rejection `json:"rejected,omitempty"` // refused trusted announcements, by id
	// Failed remembers versions that a plan had to roll back, with why.
	Failed map[string]string `json:"failed_versions,omitempty"`
}

// Rejection records why an announcement was refused, so its sender can be told.
type Rejection struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Hosts: map[string]*Host{}, Plans: map[string]*Plan{}, Rejected: map[string]Rejection{}, Failed: map[string]string{}}
}

// CurrentPlan returns the plan in progress, or nil.
func (s *State) CurrentPlan() *Plan {
	if s.Current == "" {
		return nil
	}
	return s.Plans[s.Current]
}

// Apply changes the state by one command taken at time at (the log entry's time).
func (s *State) Apply(c Command, at time.Time) error {
	switch c.Op {
	case OpRegister:
		return s.register(c.Host, at)
	case OpPropose:
		return s.propose(c, at)
	case OpReject:
		if c.Announcement == nil {
			return fmt.Errorf("reject without announcement")
		}
		s.Rejected[c.Announcement.ID] = Rejection{Reason: c.Reason, At: at}
		return nil
	case OpProgress:
		return s.progress(c, at)
	case OpTimeout:
		return s.timeout(c, at)
	case OpApprove:
		return s.approve(c, at)
	case OpPause, OpResume, OpAbort:
		return s.control(c, at)
	case OpArm:
		return s.arm(c, at)
	case OpTick:
		if p, ok := s.Plans[c.PlanID]; ok && p.Phase == PhaseSwitching && p.Proc() == Rolling {
			s.stepRolling(p, at)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", c.Op)
}

func (s *State) register(h *Host, at time.Time) error {
	if h == nil || h.ID == "" {
		return fmt.Errorf("register without host id")
	}
	hc := *h
	hc.Updated = at
	s.Hosts[h.ID] = &hc
	return nil
}

// CheckAnnouncement tells whether a proposal of a would be accepted now. The
// leader calls it before proposing so that refusals are recorded with reasons;
// propose calls it again, since the state may have moved in between.
func (s *State) CheckAnnouncement(a *Announcement, at time.Time) error {
	if err := a.Validate(); err != nil {
		return err
	}
	if _, ok := s.Plans[a.ID]; ok {
		return fmt.Errorf("%w: plan %s exists", ErrReplayed, a.ID)
	}
	if r, ok := s.Rejected[a.ID]; ok {
		return fmt.Errorf("%w: refused before: %s", ErrReplayed, r.Reason)
	}
	if !at.Before(a.ExpiresAt) {
		return fmt.Errorf("%w at %s", ErrExpired, a.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if cur := s.CurrentPlan(); cur != nil {
		return fmt.Errorf("%w: plan %s to %s is %s", ErrPlanActive, cur.ID, cur.Version, cur.Phase)
	}
	if why, failed := s.Failed[a.Version]; failed && !a.AllowFailedVersion {
		return fmt.Errorf("%w: %s (announce with --allow-failed-version to try it again)", ErrFailedVersion, why)
	}
	if len(s.Hosts) == 0 {
		return ErrNoHosts
	}
	ids := make([]string, 0, len(s.Hosts))
	for id := range s.Hosts {
		ids = append(ids, id)
	}
	if _, err := s.policyOf(ids); err != nil {
		return err
	}
	if !a.AllowDowngrade {
		for _, h := range s.sortedHosts() {
			if h.Version == "" {
				continue
			}
			if CompareVersions(a.Version, h.Version) < 0 {
				return fmt.Errorf("%w: %s runs %s, target is %s (announce with --allow-downgrade to force)",
					ErrDowngrade, h.label(), h.Version, a.Version)
			}
		}
	}
	return nil
}

func (s *State) propose(c Command, at time.Time) error {
	a := c.Announcement
	if a == nil {
		return fmt.Errorf("propose without announcement")
	}
	if err := s.CheckAnnouncement(a, at); err != nil {
		return err
	}
	t := DefaultTimeouts()
	if c.Timeouts != nil {
		t = *c.Timeouts
	}
	p := &Plan{Announcement: *a, Signer: c.Signer, Phase: PhasePreparing, Since: at, Created: at, Updated: at,
		Deadline: at.Add(t.Prepare), Hosts: map[string]*HostProgress{}, Timeouts: t}
	ids := c.HostIDs
	if len(ids) == 0 {
		for id := range s.Hosts {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		h, ok := s.Hosts[id]
		if !ok {
			return fmt.Errorf("host %s is not registered", ShortID(id))
		}
		p.Hosts[id] = &HostProgress{Step: StepPending, Version: h.Version, FromVersion: h.Version, Updated: at, StepStarted: at}
	}
	policy, err := s.policyOf(ids)
	if err != nil {
		return err
	}
	p.Policy = policy
	if err := p.recordProposer(c, at); err != nil {
		return err
	}
	s.Plans[a.ID] = p
	s.Current, s.Last = a.ID, a.ID
	return nil
}

func (s *State) progress(c Command, at time.Time) error {
	p, ok := s.Plans[c.PlanID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoPlan, c.PlanID)
	}
	h, ok := p.Hosts[c.HostID]
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrNotInPlan, c.HostID, c.PlanID)
	}
	if c.Progress == nil {
		return fmt.Errorf("progress without content")
	}
	if p.Phase.Terminal() {
		return fmt.Errorf("plan %s has ended (%s): progress of %s ignored", p.ID, p.Phase, c.HostID)
	}
	if c.Progress.Seq != 0 && c.Progress.Seq < h.Seq {
		return nil // overtaken by a later report already on record
	}
	next := *c.Progress
	if next.Step != h.Step {
		next.StepStarted = at
	} else {
		next.StepStarted = h.StepStarted
	}
	if next.FromVersion == "" {
		next.FromVersion = h.FromVersion
	}
	if next.Error == "" && next.Step != StepFailed && next.Step != StepRollbackErr {
		next.Error = h.Error // keep the last error on record
	}
	next.Updated = at
	*h = next
	p.Updated = at
	if next.Version != "" {
		if host, ok := s.Hosts[c.HostID]; ok && (next.Step == StepVerified || next.Step == StepRolledBack) {
			host.Version = next.Version
		}
	}
	s.advance(p, at)
	return nil
}

// advance moves the plan to its next phase when the hosts' steps call for it.
func (s *State) advance(p *Plan, at time.Time) {
	switch p.Phase {
	case PhasePreparing:
		if failed := p.hostsIn(StepFailed); len(failed) > 0 {
			s.end(p, PhaseFailed, "preparation failed on "+p.describe(failed)+"; nothing was stopped", at)
			return
		}
		if p.Paused {
			return
		}
		if p.all(StepPrepared) {
			p.setPhase(PhaseSwitching, at)
			p.SwitchAt = at.Add(p.Timeouts.Barrier)
			p.Deadline = p.SwitchAt.Add(p.Timeouts.Switch)
			p.Reason = ""
			s.choose(p)
			if p.Proc() == Standard {
				// Arming (see Arming): the time is set by OpArm.
				p.SwitchAt, p.Deadline = time.Time{}, at.Add(p.Timeouts.Switch)
			}
			switch p.Proc() {
			case Bootstrap:
				p.chooseSurvivor()
				s.stepBootstrap(p, at)
			case Rolling:
				s.stepRolling(p, at)
			}
		}
	case PhaseSwitching:
		if failed := p.hostsIn(StepFailed); len(failed) > 0 {
			s.rollback(p, "switch failed on "+p.describe(failed), at)
			if p.Proc() == Bootstrap {
				s.stepBootstrapRollback(p, at)
			}
			return
		}
		if p.Paused {
			return
		}
		switch p.Proc() {
		case Bootstrap:
			s.stepBootstrap(p, at)
			return
		case Rolling:
			s.stepRolling(p, at)
			return
		}
		if p.all(StepVerified) {
			s.end(p, PhaseDone, "every host verified on "+p.Version, at)
		}
	case PhaseRollingBack:
		if p.Proc() == Bootstrap {
			s.stepBootstrapRollback(p, at)
		}
		if bad := p.hostsIn(StepRollbackErr); len(bad) > 0 && p.settled() {
			s.end(p, PhaseRollbackFailed, p.Reason+"; rollback failed on "+p.describe(bad), at)
			return
		}
		if p.all(StepRolledBack) {
			s.end(p, PhaseRolledBack, p.Reason+"; every host is back on its previous version", at)
		}
	}
}

func (s *State) rollback(p *Plan, reason string, at time.Time) {
	p.setPhase(PhaseRollingBack, at)
	p.Reason = reason
	p.Deadline = at.Add(p.Timeouts.Rollback)
	p.Updated = at
}

func (s *State) end(p *Plan, phase Phase, reason string, at time.Time) {
	if phase == PhaseRolledBack || phase == PhaseRollbackFailed {
		if s.Failed == nil {
			s.Failed = map[string]string{}
		}
		s.Failed[p.Version] = "plan " + p.ID + " rolled it back: " + reason
	}
	p.setPhase(phase, at)
	p.Reason = reason
	p.Updated = at
	p.Deadline = time.Time{}
	if s.Current == p.ID {
		s.Current = ""
	}
}

// arm sets the switch time of a standard plan that is arming: the barrier
// from now. Anything else is refused, a second arm included.
func (s *State) arm(c Command, at time.Time) error {
	p, ok := s.Plans[c.PlanID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoPlan, c.PlanID)
	}
	if !p.Arming() {
		return fmt.Errorf("plan %s is not waiting for its switch time (%s, %s)", p.ID, p.Phase, p.Proc())
	}
	p.SwitchAt = at.Add(p.Timeouts.Barrier)
	p.Deadline = p.SwitchAt.Add(p.Timeouts.Switch)
	p.Reason = c.Reason
	p.Updated = at
	return nil
}

func (s *State) timeout(c Command, at time.Time) error {
	p, ok := s.Plans[c.PlanID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoPlan, c.PlanID)
	}
	if p.Phase != c.Phase || p.Deadline.IsZero() || at.Before(p.Deadline) || p.Paused {
		return nil // stale: the plan moved on, or the deadline was not reached by log time
	}
	switch p.Phase {
	case PhaseProposed:
		s.end(p, PhaseFailed, fmt.Sprintf("proposal expired with %d of %d approvals; nothing was done", len(p.Approvals), p.Policy.Threshold), at)
	case PhaseScheduled:
		if !at.Before(p.ExpiresAt) {
			s.end(p, PhaseFailed, "no maintenance window opened before the announcement expired; nothing was done", at)
			return nil
		}
		p.setPhase(PhasePreparing, at)
		p.Deadline = at.Add(p.Timeouts.Prepare)
	case PhasePreparing:
		slow := p.hostsNotIn(StepPrepared)
		s.end(p, PhaseFailed, "not prepared before the deadline: "+p.describe(slow)+"; nothing was stopped", at)
	case PhaseSwitching:
		if p.Arming() {
			s.end(p, PhaseFailed, "the switch time was never set (the raft leader could not arm the switch); nothing was stopped", at)
			return nil
		}
		slow := p.hostsNotIn(StepVerified)
		s.rollback(p, "not verified before the deadline: "+p.describe(slow), at)
		if p.Proc() == Bootstrap {
			s.stepBootstrapRollback(p, at)
		}
	case PhaseRollingBack:
		slow := p.hostsNotIn(StepRolledBack)
		s.end(p, PhaseRollbackFailed, p.Reason+"; not rolled back before the deadline: "+p.describe(slow), at)
	}
	return nil
}

func (p *Plan) all(step Step) bool {
	for _, h := range p.Hosts {
		if h.Step != step {
			return false
		}
	}
	return true
}

// settled reports whether every host has finished its rollback, one way or the other.
func (p *Plan) settled() bool {
	for _, h := range p.Hosts {
		if h.Step != StepRolledBack && h.Step != StepRollbackErr {
			return false
		}
	}
	return true
}

func (p *Plan) hostsIn(step Step) []string {
	var ids []string
	for _, id := range p.HostIDs() {
		if p.Hosts[id].Step == step {
			ids = append(ids, id)
		}
	}
	return ids
}

func (p *Plan) hostsNotIn(step Step) []string {
	var ids []string
	for _, id := range p.HostIDs() {
		if p.Hosts[id].Step != step {
			ids = append(ids, id)
		}
	}
	return ids
}

func (p *Plan) describe(ids []string) string {
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		h := p.Hosts[id]
		d := ShortID(id) + " (" + string(h.Step)
		if h.Error != "" {
			d += ": " + h.Error
		}
		parts = append(parts, d+")")
	}
	return strings.Join(parts, ", ")
}

func (s *State) sortedHosts() []*Host {
	hs := make([]*Host, 0, len(s.Hosts))
	for _, h := range s.Hosts {
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].ID < hs[j].ID })
	return hs
}

func (h *Host) label() string {
	if h.Name != "" {
		return h.Name
	}
	return "host " + ShortID(h.ID)
}

// ShortID shortens a peer ID for messages: the last 6 characters, as IPFS Cluster does in its logs.
func ShortID(id string) string {
	if len(id) <= 6 {
		return id
	}
	return "*" + id[len(id)-6:]
}

// Clone returns a deep copy of the state.
func (s *State) Clone() *State {
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("cloning plan state: %v", err))
	}
	c := NewState()
	if err := json.Unmarshal(b, c); err != nil {
		panic(fmt.Sprintf("cloning plan state: %v", err))
	}
	return c
}
