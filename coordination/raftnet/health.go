package raftnet

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// health is what the leader has seen of each other member's answers to its
// heartbeats. Raft itself reports it: FailedHeartbeatObservation on every
// failed heartbeat (with the time the member last answered) and
// ResumedHeartbeatObservation when it answers again. Only a leader sends
// heartbeats, so the record is cleared whenever this node's raft state
// changes: a new term starts from what that leader sees.
type health struct {
	mu    sync.Mutex
	now   func() time.Time
	peers map[raft.ServerID]*peerHealth
}

type peerHealth struct {
	// failingSince is when the member last answered before its heartbeats
	// started failing; zero while it answers.
	failingSince time.Time
	// healthySince is when this leader first saw it answering without a
	// failure since; zero while it fails or before it was first looked at.
	healthySince time.Time
}

func newHealth(now func() time.Time) *health {
	return &health{now: now, peers: map[raft.ServerID]*peerHealth{}}
}

// relevant filters raft's observations down to the ones health uses, so that
// the observer channel only carries those.
func relevant(o *raft.Observation) bool {
	switch o.Data.(type) {
	case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.RaftState, raft.PeerObservation:
		return true
	}
	return false
}

// observe records one observation from raft.
func (h *health) observe(data any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch d := data.(type) {
	case raft.FailedHeartbeatObservation:
		p := h.peer(d.PeerID)
		if p.failingSince.IsZero() {
			p.failingSince = d.LastContact
			if p.failingSince.IsZero() {
				p.failingSince = h.now()
			}
			p.healthySince = time.Time{}
		}
	case raft.ResumedHeartbeatObservation:
		p := h.peer(d.PeerID)
		p.failingSince = time.Time{}
		p.healthySince = h.now()
	case raft.RaftState:
		clear(h.peers)
	case raft.PeerObservation:
		if d.Removed {
			delete(h.peers, d.Peer.ID)
		}
	}
}

func (h *health) peer(id raft.ServerID) *peerHealth {
	p, ok := h.peers[id]
	if !ok {
		p = &peerHealth{}
		h.peers[id] = p
	}
	return p
}

// look returns what the leader knows of id now. reachable says whether the
// swarm holds a connection to it: a member never counts as healthy without
// one, even before its first heartbeat failed (a leader of a few
// milliseconds has not tried yet). outOfContact is how long its heartbeats
// have been failing, zero while they succeed.
func (h *health) look(id raft.ServerID, reachable bool) (healthy bool, healthySince time.Time, outOfContact time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	p := h.peer(id)
	if !p.failingSince.IsZero() {
		return false, time.Time{}, now.Sub(p.failingSince)
	}
	if !reachable {
		p.healthySince = time.Time{}
		return false, time.Time{}, 0
	}
	if p.healthySince.IsZero() {
		p.healthySince = now
	}
	return true, p.healthySince, 0
}
