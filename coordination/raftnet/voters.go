package raftnet

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
)

// The raft group keeps a few voters (3 or 5) and makes every other daemon a
// non-voter: agreement then needs answers from 2 or 3 daemons whatever the
// size of the cluster, while every daemon still receives the whole log and
// can apply commands through the leader. The leader reconciles the voters on
// a ticker: it promotes healthy non-voters while there are fewer voters than
// wanted, replaces a voter that stopped answering by a healthy non-voter, and
// demotes healthy voters beyond MaxVoters (a group that was all voters before).

// voterTarget is the number of voters wanted: the largest odd number not
// above maxVoters nor the number of healthy members, and at least one.
func voterTarget(maxVoters, healthy int) int {
	n := min(maxVoters, healthy)
	if n%2 == 0 {
		n--
	}
	return max(n, 1)
}

// serverView is one member as the leader sees it.
type serverView struct {
	id           raft.ServerID
	voter        bool
	self         bool
	healthy      bool
	healthySince time.Time     // zero unless healthy
	outOfContact time.Duration // how long its heartbeats have failed; zero while they succeed
}

type changeKind int

const (
	noChange changeKind = iota
	replaceVoter
	growVoters
	shrinkVoters
	cannotReplace // a voter should be replaced but no healthy non-voter can take its place
)

// change is one step of the reconciliation: at most one demotion and one
// promotion, with the reason in operator words.
type change struct {
	kind    changeKind
	demote  raft.ServerID
	promote raft.ServerID
	why     string
}

// decide picks the next step for the given membership, deterministically.
// A voter silent for failAfter or longer is replaced only when a healthy
// non-voter exists and the voters that still answer are a majority of all
// voters (otherwise nothing can be committed, and the leader itself may be
// the one cut off). A dead voter is never removed without a replacement.
func decide(servers []serverView, maxVoters int, failAfter time.Duration) change {
	var voters, healthy, healthyVoters int
	var failed, candidates, spare []serverView
	for _, s := range servers {
		if s.healthy {
			healthy++
		}
		switch {
		case s.voter:
			voters++
			if s.healthy {
				healthyVoters++
				if !s.self {
					spare = append(spare, s)
				}
			} else if !s.self && s.outOfContact >= failAfter {
				failed = append(failed, s)
			}
		case s.healthy:
			candidates = append(candidates, s)
		}
	}
	target := voterTarget(maxVoters, healthy)
	// Longest healthy first, then by ID.
	slices.SortFunc(candidates, func(a, b serverView) int {
		return cmp.Or(a.healthySince.Compare(b.healthySince), cmp.Compare(a.id, b.id))
	})
	// Longest silent first, then by ID.
	slices.SortFunc(failed, func(a, b serverView) int {
		return cmp.Or(cmp.Compare(b.outOfContact, a.outOfContact), cmp.Compare(a.id, b.id))
	})
	switch {
	case len(failed) > 0 && len(candidates) > 0 && 2*healthyVoters > voters:
		f, c := failed[0], candidates[0]
		return change{kind: replaceVoter, demote: f.id, promote: c.id, why: fmt.Sprintf(
			"daemon %s has not answered the raft leader for %s; replacing it as a voter with %s",
			f.id, f.outOfContact.Round(100*time.Millisecond), c.id)}
	case len(failed) > 0 && len(candidates) == 0:
		f := failed[0]
		return change{kind: cannotReplace, demote: f.id, why: fmt.Sprintf(
			"daemon %s has not answered the raft leader for %s, but no healthy non-voter can take its place; it stays a voter",
			f.id, f.outOfContact.Round(100*time.Millisecond))}
	case voters < target && len(candidates) > 0:
		c := candidates[0]
		return change{kind: growVoters, promote: c.id, why: fmt.Sprintf(
			"the raft group has %d voters and wants %d; daemon %s becomes a voter", voters, target, c.id)}
	case voters > voterTarget(maxVoters, len(servers)) && healthyVoters == voters && len(spare) > 0:
		// More voters than the cap allows (a group from before the cap, or a
		// lowered MaxVoters); never for members that are merely down, which
		// would shrink the voters during every restart. The most recently healthy, then the highest ID: the reverse of the
		// promotion order, so a demoted daemon is not promoted back at once.
		s := slices.MaxFunc(spare, func(a, b serverView) int {
			return cmp.Or(a.healthySince.Compare(b.healthySince), cmp.Compare(a.id, b.id))
		})
		return change{kind: shrinkVoters, demote: s.id, why: fmt.Sprintf(
			"the raft group has %d voters and wants %d; daemon %s becomes a non-voter",
			voters, voterTarget(maxVoters, len(servers)), s.id)}
	}
	return change{}
}

// servers reads the current configuration and what this node (the leader)
// sees of each member, with the index GetConfiguration reports for it. That
// index is always 0 in hashicorp/raft 1.7 (the future carries only the
// configuration), and 0 as prevIndex means "whatever is latest": the first
// change of a reconcile pass is not checked against a join that came between
// the decision and the change; the next pass decides again on the result. A
// promotion after a demotion is checked, with the demotion's own index.
func (r *Raft) servers() ([]serverView, uint64, error) {
	f := r.R.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, fmt.Errorf("reading raft membership: %w", err)
	}
	self := raft.ServerID(r.self.String())
	if r.IsLeader() {
		r.hold.setNonvoters(f.Configuration().Servers)
	}
	var out []serverView
	for _, s := range f.Configuration().Servers {
		v := serverView{id: s.ID, voter: s.Suffrage == raft.Voter, self: s.ID == self}
		if v.self {
			v.healthy = true
		} else {
			reachable := false
			if p, err := peer.Decode(string(s.ID)); err == nil {
				reachable = r.node.Host.Network().Connectedness(p) == network.Connected
			}
			v.healthy, v.healthySince, v.outOfContact = r.health.look(s.ID, reachable)
		}
		out = append(out, v)
	}
	return out, f.Index(), nil
}

// reconcileInterval is how often the leader looks at the voters: often
// enough to replace a silent voter soon after VoterFailureTimeout.
func (c *Config) reconcileInterval() time.Duration {
	return min(max(c.VoterFailureTimeout/5, 20*time.Millisecond), 2*time.Second)
}

// reconcileLoop runs until Shutdown; it acts only while this node leads.
func (r *Raft) reconcileLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.reconcileInterval())
	defer t.Stop()
	warned := map[raft.ServerID]bool{}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-r.kickCh:
		}
		if r.IsLeader() {
			r.reconcile(warned)
		} else {
			clear(warned)
		}
		r.passes.Add(1)
	}
}

// kick asks the reconcile loop for a pass now (a daemon joined, or this one
// became leader).
func (r *Raft) kick() {
	select {
	case r.kickCh <- struct{}{}:
	default:
	}
}

func (r *Raft) reconcile(warned map[raft.ServerID]bool) {
	servers, index, err := r.servers()
	if err != nil {
		r.log.Debug("reconciling the raft voters", zap.Error(err))
		return
	}
	c := decide(servers, r.cfg.MaxVoters, r.cfg.VoterFailureTimeout)
	switch c.kind {
	case noChange:
		return
	case cannotReplace:
		if !warned[c.demote] {
			r.log.Warn(c.why, zap.String("peer", string(c.demote)))
			warned[c.demote] = true
		}
		return
	}
	clear(warned)
	fields := []zap.Field{zap.Duration("voter_failure_timeout", r.cfg.VoterFailureTimeout)}
	if c.demote != "" {
		fields = append(fields, zap.String("demoted", string(c.demote)))
	}
	if c.promote != "" {
		fields = append(fields, zap.String("promoted", string(c.promote)))
	}
	r.log.Info(c.why, fields...)
	err = r.applyChange(c, index)
	switch {
	case err == nil:
	case strings.Contains(err.Error(), "configuration changed since"):
		// A join came between the demotion and the promotion; the next pass
		// decides again.
		r.log.Info("the raft membership changed meanwhile; will look again", zap.Error(err))
	default:
		r.log.Warn("changing the raft voters failed; will look again", zap.Error(err))
	}
}

// applyChange demotes, then promotes on top of the configuration the
// demotion made (see servers for the first change's index).
func (r *Raft) applyChange(c change, index uint64) error {
	if c.demote != "" {
		f := r.R.DemoteVoter(c.demote, index, r.cfg.RequestTimeout)
		if err := f.Error(); err != nil {
			return fmt.Errorf("making daemon %s a non-voter: %w", c.demote, err)
		}
		index = f.Index()
	}
	if c.promote != "" {
		r.hold.promoting(c.promote)
		f := r.R.AddVoter(c.promote, raft.ServerAddress(c.promote), index, r.cfg.RequestTimeout)
		if err := f.Error(); err != nil {
			return fmt.Errorf("making daemon %s a voter: %w", c.promote, err)
		}
	}
	return nil
}

// Health is what the raft leader sees of a member.
type Health string

// Health values. Only the leader knows; other daemons report HealthUnknown.
const (
	HealthUnknown     Health = "unknown"
	HealthHealthy     Health = "healthy"
	HealthUnreachable Health = "unreachable"
)

// Member is one server of the raft group.
type Member struct {
	ID    peer.ID
	Voter bool
	// Health is what the leader sees; HealthUnknown unless this node leads.
	Health Health
	// OutOfContact is how long the leader's heartbeats to it have failed.
	OutOfContact time.Duration
}

// Membership lists the raft group's servers with their suffrage and, on the
// leader, their health, sorted by peer ID.
func (r *Raft) Membership() ([]Member, error) {
	views, _, err := r.servers()
	if err != nil {
		return nil, err
	}
	leads := r.IsLeader()
	out := make([]Member, 0, len(views))
	for _, v := range views {
		p, err := peer.Decode(string(v.id))
		if err != nil {
			return nil, fmt.Errorf("raft member %q is not a peer ID: %w", v.id, err)
		}
		m := Member{ID: p, Voter: v.voter, Health: HealthUnknown}
		if leads {
			m.Health, m.OutOfContact = HealthUnreachable, v.outOfContact
			if v.healthy {
				m.Health = HealthHealthy
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}
