package raftnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
)

// errNoLeader and errNotLeader mean the command was certainly not applied,
// so it is safe to try again.
var (
	errNoLeader  = errors.New("no raft leader")
	errNotLeader = errors.New("asked a daemon that is not the raft leader")
)

// Apply commits cmd through the leader and returns the FSM's response,
// JSON-encoded (nil when the FSM returned nil). The command is applied here
// when this node leads, and otherwise forwarded to the leader over
// /upgraded/raft-apply/1.0.0.
//
// Responses travel the same way in both cases: an FSM error becomes an
// error wrapping ErrRejected (with the FSM's text), any other value is
// JSON-encoded. While there is no leader, or the leader changed before the
// command was handed over, Apply retries until ctx ends. It does not retry
// once the outcome is unknown (for example a leader lost mid-commit): the
// caller decides, knowing whether its command is idempotent.
func (r *Raft) Apply(ctx context.Context, cmd []byte) (json.RawMessage, error) {
	var wait time.Duration
	for {
		resp, err := r.applyOnce(ctx, cmd)
		if !retryable(err) {
			return resp, err
		}
		wait = backoff(wait)
		r.log.Debug("command not applied yet, retrying", zap.Error(err), zap.Duration("in", wait))
		if werr := r.wait(ctx, wait); werr != nil {
			return nil, fmt.Errorf("applying raft command: %w (last attempt: %w)", werr, err)
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, errNoLeader) || errors.Is(err, errNotLeader) || errors.Is(err, errUnreachable) ||
		errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
}

func (r *Raft) applyOnce(ctx context.Context, cmd []byte) (json.RawMessage, error) {
	if r.ctx.Err() != nil {
		return nil, ErrShutdown
	}
	if r.IsLeader() {
		return r.applyLocal(ctx, cmd)
	}
	leader, ok := r.Leader()
	if !ok || leader == r.self {
		return nil, errNoLeader
	}
	resp, err := call(ctx, r.node.Host, leader, applyProtocol, applyRequest{Command: cmd})
	if err != nil {
		return nil, err
	}
	return decodeResponse(leader, resp)
}

// applyLocal applies cmd on this node, which must lead.
func (r *Raft) applyLocal(ctx context.Context, cmd []byte) (json.RawMessage, error) {
	timeout := r.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	f := r.R.Apply(cmd, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return nil, ErrShutdown
		}
		return nil, fmt.Errorf("applying raft command: %w", err)
	}
	r.flush()
	switch v := f.Response().(type) {
	case nil:
		return nil, nil
	case error:
		return nil, fmt.Errorf("%w: %w", ErrRejected, v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding the FSM response (the command was applied): %w", err)
		}
		return b, nil
	}
}

func decodeResponse(from peer.ID, resp response) (json.RawMessage, error) {
	switch resp.Code {
	case "":
		return resp.Response, nil
	case codeNotLeader:
		return nil, fmt.Errorf("%w: %s: %s", errNotLeader, from, resp.Error)
	case codeRejected:
		return nil, fmt.Errorf("%w: %s", ErrRejected, resp.Error)
	default:
		return nil, fmt.Errorf("daemon %s answered: %s", from, resp.Error)
	}
}

// handleApply serves a follower's command on the leader.
func (r *Raft) handleApply(from peer.ID, req applyRequest) response {
	if !r.IsLeader() {
		return response{Code: codeNotLeader, Error: "this daemon is not the raft leader"}
	}
	if check := r.forwardCheck.Load(); check != nil {
		if err := (*check)(from, req.Command); err != nil {
			r.log.Warn("refused a command forwarded by another daemon", zap.Stringer("peer", from), zap.Error(err))
			return response{Code: codeRejected, Error: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.RequestTimeout)
	defer cancel()
	out, err := r.applyLocal(ctx, req.Command)
	switch {
	case err == nil:
		return response{Response: out}
	case errors.Is(err, ErrRejected):
		return response{Code: codeRejected, Error: strings.TrimPrefix(err.Error(), ErrRejected.Error()+": ")}
	case errors.Is(err, raft.ErrNotLeader):
		return response{Code: codeNotLeader, Error: err.Error()}
	default:
		r.log.Warn("applying a command for another daemon failed", zap.Stringer("peer", from), zap.Error(err))
		return response{Code: codeRaft, Error: err.Error()}
	}
}

// flush asks flushCommits to tell every member that the log is committed up
// to the command just applied. Requests made while one is under way merge.
func (r *Raft) flush() {
	select {
	case r.flushCh <- struct{}{}:
	default:
	}
}

// flushCommits runs on every member and acts on the leader: for each flush it
// appends a barrier entry. hashicorp/raft sends a new entry to every member
// at once, and with it the commit index, which now covers the command that
// asked for the flush; members apply that command on receipt instead of at
// the next CommitTimeout. That is what lets CommitTimeout be long (see
// DefaultCommitTimeout) without delaying what the members see: a plan's
// switch time, the next batch of a rolling upgrade. The barrier itself
// changes no state.
func (r *Raft) flushCommits() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.flushCh:
		}
		if !r.IsLeader() {
			continue
		}
		if !r.waitQuiet() {
			return
		}
		if err := r.R.Barrier(r.cfg.RequestTimeout).Error(); err != nil && r.ctx.Err() == nil {
			r.log.Debug("telling the members of a commit", zap.Error(err))
		}
	}
}

// Quiet lets this leader answer whoever proposed a command before the group
// starts working on it: until release is called, or max has passed, the
// commands committed from now on are not released to the non-voters (see
// holdback) and no commit notice goes out (see flushCommits). The voters
// still commit; each learns the commit at raft's next append to it.
//
// At 100 daemons on 2 cores, the commit of a plan woke 99 daemons to
// prepare at once, and the leader's answer to the daemon an operator
// announced through then waited behind them for up to 818 ms. max bounds
// how long the group waits for a proposer that does not say it has the
// answer; a non-voter's append waits at most holdbackMax in any case.
func (r *Raft) Quiet(max time.Duration) (release func()) { return r.hold.quiet(max) }

// waitQuiet waits until no quiet is under way. It reports false when raft
// is shutting down.
func (r *Raft) waitQuiet() bool {
	for {
		ch := r.hold.waitCh() // before looking, so that no wake is missed
		if r.hold.fence.Load() == 0 {
			return true
		}
		select {
		case <-r.ctx.Done():
			return false
		case <-ch:
		}
	}
}
