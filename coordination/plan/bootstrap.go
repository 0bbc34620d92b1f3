package plan

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// chooseSurvivor picks the host that stays while the others leave: the one
// whose verified live backup holds the most pins; on a tie the most recently
// prepared, then the lowest host ID (stable on every daemon). The REST API of
// IPFS Cluster does not say which peer leads its raft, so that preference of
// the issue cannot be applied from here; the reason says what decided.
func (p *Plan) chooseSurvivor() {
	ids := p.HostIDs()
	sort.SliceStable(ids, func(i, j int) bool {
		a, b := p.Hosts[ids[i]], p.Hosts[ids[j]]
		if a.BackupPins != b.BackupPins {
			return a.BackupPins > b.BackupPins
		}
		if !a.Updated.Equal(b.Updated) {
			return a.Updated.After(b.Updated)
		}
		return ids[i] < ids[j]
	})
	p.Survivor = ids[0]
	best := p.Hosts[ids[0]]
	reason := fmt.Sprintf("its verified live backup holds %d pins, the most of any host", best.BackupPins)
	if len(ids) > 1 && p.Hosts[ids[1]].BackupPins == best.BackupPins {
		reason = fmt.Sprintf("its verified live backup holds %d pins like %s; chosen as the most recently prepared, then by host id",
			best.BackupPins, strings.TrimSpace(ShortID(ids[1])))
	}
	if len(ids) == 1 {
		reason = "the only host: its peer is never removed"
	}
	p.SurvivorReason = reason
	// Remove (and later rejoin) the others, least complete first.
	p.Order = append([]string(nil), ids[1:]...)
	sort.SliceStable(p.Order, func(i, j int) bool {
		a, b := p.Hosts[p.Order[i]], p.Hosts[p.Order[j]]
		if a.BackupPins != b.BackupPins {
			return a.BackupPins < b.BackupPins
		}
		return p.Order[i] < p.Order[j]
	})
	p.Tasks = map[string]Task{}
}

// setTask gives host id its next task; a new task restarts the phase deadline.
func (p *Plan) setTask(id string, t Task, at time.Time) {
	if p.Tasks == nil {
		p.Tasks = map[string]Task{}
	}
	if p.Tasks[id] == t {
		return
	}
	p.Tasks[id] = t
	p.Deadline = at.Add(p.Timeouts.Switch)
}

// stepBootstrap moves the bootstrap sequence on by one host at a time:
// every other host removed, then the survivor upgraded alone, then every
// removed host rejoined; the plan is done when each is verified or left out.
func (s *State) stepBootstrap(p *Plan, at time.Time) {
	for _, id := range p.Order {
		switch p.Hosts[id].Step {
		case StepRemoved, StepRejoining, StepVerified, StepLeftOut:
			continue
		}
		p.setTask(id, TaskRemove, at)
		return
	}
	if p.Hosts[p.Survivor].Step != StepVerified {
		p.setTask(p.Survivor, TaskUpgrade, at)
		return
	}
	for _, id := range p.Order {
		switch p.Hosts[id].Step {
		case StepVerified, StepLeftOut:
			continue
		}
		p.setTask(id, TaskRejoin, at)
		return
	}
	reason := "every host verified on " + p.Version
	if left := p.hostsIn(StepLeftOut); len(left) > 0 {
		reason = "the cluster runs " + p.Version + " without " + p.describe(left) + ": they could not rejoin"
	}
	s.end(p, PhaseDone, reason, at)
}

// stepBootstrapRollback brings the survivor back first (old binary, old
// state, alone), then bootstraps each removed host back to it on its old
// version, one at a time.
func (s *State) stepBootstrapRollback(p *Plan, at time.Time) {
	settled := func(id string) bool {
		st := p.Hosts[id].Step
		return st == StepRolledBack || st == StepRollbackErr
	}
	if p.Survivor == "" {
		return // failed before the sequence began: hosts undo their own part in parallel
	}
	if !settled(p.Survivor) {
		p.setTask(p.Survivor, TaskRestore, at)
		p.Deadline = at.Add(p.Timeouts.Rollback)
		return
	}
	for _, id := range p.Order {
		if !settled(id) {
			p.setTask(id, TaskRejoinOld, at)
			p.Deadline = at.Add(p.Timeouts.Rollback)
			return
		}
	}
}
