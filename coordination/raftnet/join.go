package raftnet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// Join asks the cluster to add this node, through any member reachable at
// one of addrs (full /p2p multiaddrs; members forward to the leader). The
// leader makes it a voter while the group has fewer voters than it wants and
// no healthy non-voter to promote, a non-voter otherwise. Join retries with
// backoff until it succeeds or ctx ends, and does nothing when this node is
// already a member (e.g. restarted from its Dir, whatever its suffrage).
func (r *Raft) Join(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("joining raft cluster: no member addresses given")
	}
	targets, err := joinTargets(addrs)
	if err != nil {
		return fmt.Errorf("joining raft cluster: %w", err)
	}
	// Only a member already (restarted from its Dir) skips the request. Once
	// asked, only the leader's answer counts: a newcomer sees itself in its
	// configuration as soon as the leader appends the change, before it is
	// committed, and a change the leader loses with its leadership is gone.
	// At N=100 a daemon that stopped asking then heard from no leader again.
	if r.isMember() {
		return nil
	}
	var wait time.Duration
	for {
		err := r.tryJoin(ctx, targets)
		if err == nil {
			r.log.Info("joined the raft cluster")
			return nil
		}
		wait = backoff(wait)
		r.log.Debug("joining raft cluster, will retry", zap.Error(err), zap.Duration("in", wait))
		if werr := r.wait(ctx, wait); werr != nil {
			return fmt.Errorf("joining raft cluster: %w (last attempt: %w)", werr, err)
		}
	}
}

// joinTargets maps each member's peer ID to one of its addresses.
func joinTargets(addrs []string) (map[peer.ID]string, error) {
	targets := map[peer.ID]string{}
	for _, s := range addrs {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("parsing address %q: %w", s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(ma)
		if err != nil {
			return nil, fmt.Errorf("address %q must end in /p2p/<peer ID>: %w", s, err)
		}
		targets[ai.ID] = s
	}
	return targets, nil
}

func (r *Raft) tryJoin(ctx context.Context, targets map[peer.ID]string) error {
	req := joinRequest{ID: r.self.String()}
	for _, a := range r.node.Host.Addrs() {
		req.Addrs = append(req.Addrs, a.String())
	}
	var errs []error
	for id, addr := range targets {
		if id == r.self {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout+2*time.Second)
		err := r.askToJoin(actx, id, addr, req)
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return errors.New("no member address other than this daemon's own")
	}
	return errors.Join(errs...)
}

func (r *Raft) askToJoin(ctx context.Context, id peer.ID, addr string, req joinRequest) error {
	if err := r.node.Connect(ctx, []string{addr}); err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	resp, err := call(ctx, r.node.Host, id, joinProtocol, req)
	if err != nil {
		return err
	}
	if resp.Code != "" {
		return fmt.Errorf("daemon %s refused the join: %s", id, resp.Error)
	}
	return nil
}

// handleJoin adds the requester on the leader, or forwards the request once
// to the leader.
func (r *Raft) handleJoin(from peer.ID, req joinRequest) response {
	id, err := peer.Decode(req.ID)
	if err != nil {
		return response{Code: codeBadRequest, Error: fmt.Sprintf("joining daemon %q is not a peer ID", req.ID)}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.RequestTimeout)
	defer cancel()
	if r.IsLeader() {
		return r.addMember(ctx, from, id, req.Addrs)
	}
	leader, ok := r.Leader()
	switch {
	case req.Forwarded:
		return response{Code: codeNotLeader, Error: "this daemon is no longer the raft leader"}
	case !ok:
		return response{Code: codeNotLeader, Error: "no raft leader at the moment"}
	}
	req.Forwarded = true
	resp, err := call(ctx, r.node.Host, leader, joinProtocol, req)
	if err != nil {
		return response{Code: codeNotLeader, Error: fmt.Sprintf("forwarding to leader %s: %v", leader, err)}
	}
	return resp
}

func (r *Raft) addMember(ctx context.Context, from, id peer.ID, addrs []string) response {
	// Make sure the leader can reach the newcomer even when it was introduced
	// by another member.
	if len(addrs) > 0 {
		full := make([]string, 0, len(addrs))
		for _, a := range addrs {
			full = append(full, a+"/p2p/"+id.String())
		}
		if err := r.node.Connect(ctx, full); err != nil {
			r.log.Debug("connecting to a joining daemon", zap.Stringer("peer", id), zap.Error(err))
		}
	}
	sid := raft.ServerID(id.String())
	servers, index, err := r.servers()
	if err != nil {
		return response{Code: codeRaft, Error: err.Error()}
	}
	voters, healthy, spare := 0, 1, 0 // 1: the newcomer, which just reached us
	for _, s := range servers {
		if s.id == sid {
			// Already in the configuration, keeping its suffrage; but the
			// change may be one still uncommitted (an earlier request that
			// timed out): answer once everything before is committed.
			if err := r.R.Barrier(r.cfg.RequestTimeout).Error(); err != nil {
				if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
					return response{Code: codeNotLeader, Error: err.Error()}
				}
				return response{Code: codeRaft, Error: fmt.Sprintf("committing the membership of %s: %v", id, err)}
			}
			return response{}
		}
		if s.voter {
			voters++
		}
		if s.healthy {
			healthy++
			if !s.voter {
				spare++
			}
		}
	}
	target := voterTarget(r.cfg.MaxVoters, healthy)
	// A newcomer has no log yet: while a healthy non-voter, which has it,
	// can be promoted instead (the reconcile pass kicked below does), the
	// newcomer starts as a non-voter and does not hold up commits.
	add, as := r.R.AddNonvoter, "non-voter"
	if voters < target && spare == 0 {
		add, as = r.R.AddVoter, "voter"
		r.hold.promoting(sid) // a non-voter joining again
	}
	// index is 0 (see servers): two daemons joining at once may both be
	// added as voters; the reconcile pass kicked below demotes the surplus.
	if err := add(sid, raft.ServerAddress(sid), index, r.cfg.RequestTimeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return response{Code: codeNotLeader, Error: err.Error()}
		}
		return response{Code: codeRaft, Error: fmt.Sprintf("adding %s as a %s: %v", id, as, err)}
	}
	r.log.Info("daemon joined the raft group as a "+as, zap.Stringer("peer", id), zap.Stringer("via", from),
		zap.Int("voters_before", voters), zap.Int("voters_wanted", target))
	r.kick()
	return response{}
}

// rejoinGap is the least time between two of RejoinSoon's requests.
const rejoinGap = 15 * time.Second

// RejoinSoon asks the group to add this node again, in the background,
// unless a request is under way or one was made less than rejoinGap ago. A
// daemon that hears from no leader calls it: the group may have forgotten it
// (its addition was lost with a leader before it was committed), and it
// cannot tell that apart from an election. For a member the leader answers
// at once; a forgotten one is added again. The request goes through at most
// three connected daemons, the voters this node knows of first: any member
// forwards it to the leader.
func (r *Raft) RejoinSoon() {
	r.rejoinMu.Lock()
	defer r.rejoinMu.Unlock()
	if r.rejoining || (!r.rejoined.IsZero() && time.Since(r.rejoined) < rejoinGap) || r.ctx.Err() != nil {
		return
	}
	r.rejoining = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.tryJoin(r.ctx, r.rejoinTargets(3))
		r.rejoinMu.Lock()
		r.rejoining, r.rejoined = false, time.Now()
		r.rejoinMu.Unlock()
		if err != nil {
			r.log.Debug("asking the group to add this daemon again", zap.Error(err))
			return
		}
		r.log.Info("asked the group to add this daemon again, as no leader is heard from; the leader holds it as a member")
	}()
}

// rejoinTargets returns up to n connected daemons with an address each: the
// voters of this node's configuration first.
func (r *Raft) rejoinTargets(n int) map[peer.ID]string {
	h := r.node.Host
	var order []peer.ID
	if servers, _, err := r.servers(); err == nil {
		for _, s := range servers {
			if id, err := peer.Decode(string(s.id)); err == nil && s.voter && !s.self {
				order = append(order, id)
			}
		}
	}
	order = append(order, h.Network().Peers()...)
	targets := map[peer.ID]string{}
	for _, id := range order {
		if len(targets) == n {
			break
		}
		if _, ok := targets[id]; ok || id == r.self || h.Network().Connectedness(id) != network.Connected {
			continue
		}
		if addrs := h.Peerstore().Addrs(id); len(addrs) > 0 {
			targets[id] = addrs[0].String() + "/p2p/" + id.String()
		}
	}
	return targets
}
