package coordination

import (
	"bufio"
	"context"
	"encoding/binary"
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
//
// The asking daemon sends the envelope's length (uvarint) and the envelope,
// reads the JSON answer, and closes the stream: that close tells the leader
// the answer arrived, and only then does the leader tell the rest of the
// group of the commit (see raftnet.Raft.Quiet). Version 1.0.0 sent the
// envelope up to the end of the stream, which left nothing to say it with.
const proposeProtocol = "/upgraded/propose/1.1.0"

// maxEnvelope bounds an announcement, as the control socket does.
const maxEnvelope = 1 << 20

// proposeTimeout bounds the wait for the leader's answer; past it the
// announcing daemon publishes the announcement and waits for its copy of
// the plan state instead.
const proposeTimeout = 10 * time.Second

// answerFirst bounds how long a leader keeps the commit of a proposal from
// the rest of the group while it answers (see raftnet.Raft.Quiet): the
// commit itself, then the answer's way to the asking daemon. At 100
// daemons on 2 cores raft's commit took 12-480 ms; a non-voter's append
// waits at most raftnet's holdbackMax anyway.
const answerFirst = 2 * time.Second

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
		r := bufio.NewReader(st)
		data, err := readEnvelope(r)
		if err != nil {
			_ = st.Reset()
			return
		}
		var ans proposeAnswer
		release := func() {}
		defer func() { release() }()
		if !c.cfg.Raft.IsLeader() {
			ans.Error = "this daemon is not the raft leader"
		} else {
			release = c.cfg.Raft.Quiet(answerFirst)
			out, err := c.propose(ctx, data)
			if err != nil {
				c.log.Warn("proposing an announcement another daemon handed over", zap.Stringer("from", st.Conn().RemotePeer()), zap.Error(err))
				ans.Error = err.Error()
			}
			ans.Outcome = out
		}
		if err := json.NewEncoder(st).Encode(ans); err != nil {
			_ = st.Reset()
			return
		}
		// The asking daemon closes its side once it read the answer.
		_ = st.SetReadDeadline(time.Now().Add(answerFirst))
		_, _ = r.ReadByte()
	})
}

// readEnvelope reads what askPropose sends: a uvarint length, then the envelope.
func readEnvelope(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("reading the announcement's length: %w", err)
	}
	if n == 0 || n > maxEnvelope {
		return nil, fmt.Errorf("announcement of %d bytes: want 1 to %d", n, maxEnvelope)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("reading the announcement: %w", err)
	}
	return data, nil
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
		// The answer goes back in this process: the group hears of the
		// commit as soon as it is in hand.
		release := c.cfg.Raft.Quiet(answerFirst)
		var err error
		out, err = c.propose(ctx, data)
		release()
		if err != nil {
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

// askPropose sends data to the daemon to on proposeProtocol and reads its
// answer. Closing the stream after the answer tells the leader it arrived.
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
	msg := binary.AppendUvarint(make([]byte, 0, len(data)+binary.MaxVarintLen64), uint64(len(data)))
	if _, err := st.Write(append(msg, data...)); err != nil {
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
