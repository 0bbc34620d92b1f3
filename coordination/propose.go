package coordination

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// proposeProtocol carries an announcement from the daemon an operator gave
// it to straight to the raft leader, which proposes it and answers with the
// outcome once it is committed. Gossip took one hop more to reach the leader
// and, after the commit, the announcing daemon waited for its own copy of
// the log: in an N=100 benchmark run, 1.04 s of a 1.19 s answer went to these
// two waits (raft's commit took 156 ms).
const proposeProtocol = "/upgraded/propose/1.0.0"

// maxEnvelope bounds an announcement, as the control socket does.
const maxEnvelope = 1 << 20

// proposeTimeout bounds the wait for the leader's answer; past it the
// announcing daemon publishes the announcement and waits for its copy of
// the plan state instead.
const proposeTimeout = 10 * time.Second

// proposeAnswer is the leader's answer: the outcome, or why it did not
// propose (it is not the leader, the announcement is not valid, raft failed).
type proposeAnswer struct {
	Outcome
	Error string `json:"error,omitempty"`
}

// serveProposals answers proposeProtocol: only the leader proposes.
func (c *Coordinator) serveProposals(h host.Host) *p2p.Service {
	return p2p.ServeProtocol(h, proposeProtocol, func(ctx context.Context, st network.Stream) {
		defer st.Close()
		// The asking daemon stops waiting after proposeTimeout; so does this.
		ctx, cancel := context.WithTimeout(ctx, proposeTimeout)
		defer cancel()
		_ = st.SetDeadline(time.Now().Add(proposeTimeout))
		data, err := io.ReadAll(io.LimitReader(st, maxEnvelope+1))
		var ans proposeAnswer
		switch {
		case err != nil:
			_ = st.Reset()
			return
		case len(data) > maxEnvelope:
			ans.Error = "announcement too large"
		case !c.cfg.Raft.IsLeader():
			ans.Error = "this daemon is not the raft leader"
		default:
			out, err := c.propose(ctx, data)
			if err != nil {
				c.log.Warn("proposing an announcement another daemon handed over", zap.Stringer("from", st.Conn().RemotePeer()), zap.Error(err))
				ans.Error = err.Error()
			}
			ans.Outcome = out
		}
		if err := json.NewEncoder(st).Encode(ans); err != nil {
			_ = st.Reset()
		}
	})
}

// proposeToLeader hands data to the raft leader, or proposes it here when
// this daemon leads, and returns the committed outcome. An error means no
// leader took it (none known, unreachable, no longer leading, raft failed):
// the caller publishes it for whichever leader comes.
func (c *Coordinator) proposeToLeader(ctx context.Context, data []byte) (Outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, proposeTimeout)
	defer cancel()
	leader, ok := c.leader()
	if !ok {
		return Outcome{}, errors.New("no raft leader known")
	}
	var out Outcome
	if leader == c.cfg.Node.ID() {
		var err error
		if out, err = c.propose(ctx, data); err != nil {
			return Outcome{}, err
		}
	} else {
		ans, err := askPropose(ctx, c.cfg.Node.Host, leader, data)
		if err != nil {
			return Outcome{}, fmt.Errorf("handing the announcement to the raft leader %s: %w", leader, err)
		}
		if ans.Error != "" {
			return Outcome{}, fmt.Errorf("the raft leader %s did not propose the announcement: %s", leader, ans.Error)
		}
		out = ans.Outcome
	}
	// A leader that lost its leadership while committing had raft forward
	// the command to the next one; its own plan state may not hold the
	// outcome yet.
	if out.Plan == nil && out.Rejected == "" {
		return Outcome{}, fmt.Errorf("the raft leader %s committed the announcement but did not hold its outcome yet", leader)
	}
	return out, nil
}

// askPropose sends data to the daemon to on proposeProtocol and reads its answer.
func askPropose(ctx context.Context, h host.Host, to peer.ID, data []byte) (proposeAnswer, error) {
	var ans proposeAnswer
	st, err := h.NewStream(ctx, to, proposeProtocol)
	if err != nil {
		return ans, err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	if _, err := st.Write(data); err != nil {
		_ = st.Reset()
		return ans, fmt.Errorf("sending: %w", err)
	}
	if err := st.CloseWrite(); err != nil {
		_ = st.Reset()
		return ans, fmt.Errorf("sending: %w", err)
	}
	if err := json.NewDecoder(io.LimitReader(st, 4*maxEnvelope)).Decode(&ans); err != nil {
		_ = st.Reset()
		return ans, fmt.Errorf("reading the answer: %w", err)
	}
	return ans, nil
}

// inFlight lets one proposal of an announcement run at a time.
type inFlight struct {
	mu  sync.Mutex
	ids map[string]chan struct{}
}

// start waits until no other proposal of id is under way, then marks one
// under way until release is called.
func (f *inFlight) start(ctx context.Context, id string) (release func(), err error) {
	for {
		f.mu.Lock()
		busy, ok := f.ids[id]
		if !ok {
			if f.ids == nil {
				f.ids = map[string]chan struct{}{}
			}
			done := make(chan struct{})
			f.ids[id] = done
			f.mu.Unlock()
			return func() {
				f.mu.Lock()
				delete(f.ids, id)
				f.mu.Unlock()
				close(done)
			}, nil
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-busy:
		}
	}
}
