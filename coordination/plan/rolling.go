package plan

import (
	"fmt"
	"sort"
	"time"
)

// choose resolves the procedure of an auto plan once every host is prepared
// and has reported the RPC protocol of its running peer and of the staged
// binary: peers of different RPC protocols cannot serve together, so only an
// unchanged protocol allows a rolling upgrade.
func (s *State) choose(p *Plan) {
	if p.Procedure != Auto {
		p.Chosen = p.Procedure
		if p.Procedure == Rolling {
			p.ChoiceReason = "rolling, as announced"
			s.clampRolling(p)
		}
		return
	}
	running, staged, raft := map[string]bool{}, map[string]bool{}, false
	for id, h := range p.Hosts {
		running[h.RPCRunning], staged[h.RPCStaged] = true, true
		if host, ok := s.Hosts[id]; ok && host.Consensus == "raft" {
			raft = true
		}
	}
	one := func(m map[string]bool) string {
		if len(m) != 1 {
			return ""
		}
		for k := range m {
			return k
		}
		return ""
	}
	from, to := one(running), one(staged)
	fallback := Standard
	if raft {
		fallback = Bootstrap
	}
	switch {
	case from != "" && from == to:
		p.Chosen = Rolling
		p.ChoiceReason = fmt.Sprintf("the running peers and %s speak the same RPC protocol (%s): one peer at a time, the others serving", p.Version, from)
		s.clampRolling(p)
	case staged[""]:
		p.Chosen = fallback
		p.ChoiceReason = fmt.Sprintf("the staged binary's RPC protocol could not be learned on every host (a trial start failed): %s, which does not mix versions", fallback)
	case from == "" || to == "":
		p.Chosen = fallback
		p.ChoiceReason = fmt.Sprintf("the hosts did not agree on one RPC protocol (running %v, staged %v): %s, which does not mix versions", keys(running), keys(staged), fallback)
	default:
		p.Chosen = fallback
		p.ChoiceReason = fmt.Sprintf("the RPC protocol changes (%s -> %s), so peers of both versions cannot serve together: %s procedure (%s consensus)",
			from, to, fallback, map[bool]string{true: "raft", false: "crdt"}[raft])
	}
}

// clampRolling keeps a raft majority up: at most (n-1)/2 peers down at once.
func (s *State) clampRolling(p *Plan) {
	raft := false
	for id := range p.Hosts {
		if h, ok := s.Hosts[id]; ok && h.Consensus == "raft" {
			raft = true
		}
	}
	p.BatchSize = max(p.MaxUnavailable, 1)
	if limit := max((len(p.Hosts)-1)/2, 1); raft && p.BatchSize > limit {
		p.ChoiceReason += fmt.Sprintf("; at most %d peers at a time so that a raft majority stays up", limit)
		p.BatchSize = limit
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// stepRolling moves a rolling plan on: the current batch must be verified,
// then the settle time (the soak, after the canaries) must pass, then the next
// batch of at most MaxUnavailable hosts gets its task. The leader sends a
// tick when a wait ends.
func (s *State) stepRolling(p *Plan, at time.Time) {
	if p.Paused {
		return
	}
	if len(p.Batch) > 0 {
		for _, id := range p.Batch {
			if p.Hosts[id].Step != StepVerified {
				return
			}
		}
		if p.NextBatchAt.IsZero() {
			wait := p.Settle
			if p.BatchNumber == 1 && p.Canary > 0 {
				wait = p.Soak
			}
			p.NextBatchAt = at.Add(wait)
			p.Deadline = p.NextBatchAt.Add(p.Timeouts.Switch)
		}
		if at.Before(p.NextBatchAt) {
			return
		}
		p.Batch, p.NextBatchAt = nil, time.Time{}
	}
	var left []string
	for _, id := range p.rollingOrder() {
		if p.Hosts[id].Step != StepVerified {
			left = append(left, id)
		}
	}
	if len(left) == 0 {
		s.end(p, PhaseDone, "every host verified on "+p.Version+", one batch at a time", at)
		return
	}
	size := max(p.BatchSize, 1)
	if p.BatchNumber == 0 && p.Canary > 0 {
		size = p.Canary
	}
	p.Batch = append([]string(nil), left[:min(size, len(left))]...)
	p.BatchNumber++
	for _, id := range p.Batch {
		p.setTask(id, TaskUpgrade, at)
	}
	p.Deadline = at.Add(p.Timeouts.Switch)
}

// rollingOrder is the hosts in upgrade order (by id: the same on every daemon).
func (p *Plan) rollingOrder() []string { return p.HostIDs() }
