// Package raftnet runs the daemons' raft group (hashicorp/raft) over the
// daemons' libp2p swarm.
//
// Raft's RPCs travel on libp2p streams (streams.go) rather than on a TCP port of
// their own. That way raft traffic rides the same private network as pubsub:
// only hosts holding the cluster secret can connect at all, every connection
// is encrypted and authenticated by peer ID, there is one port to open in
// firewalls, and a member is found by its peer ID wherever it now listens.
// Server IDs and server addresses are both peer ID strings.
//
// Two small request/response protocols sit beside raft's own: join (a new
// daemon asks any member to add it; members forward to the leader) and apply
// (a follower hands a command to the leader). Both serve only peers of the
// private network, which is true by construction of the swarm.
//
// The group keeps MaxVoters voters at most (3 or 5) and makes every other
// daemon a non-voter, which receives the log but does not vote, so that large
// clusters agree as fast as small ones; the leader replaces a voter that stops
// answering (voters.go).
package raftnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// Config configures a raft member.
type Config struct {
	// Dir holds raft.db (log and stable store) and snapshots/.
	Dir  string
	Node *p2p.Node
	// FSM receives committed commands. Its Apply should return nil, an error
	// (the command is refused: callers get ErrRejected) or a JSON-encodable value.
	FSM    raft.FSM
	Logger *zap.Logger
	// Bootstrap makes this node the single voter of a new cluster when Dir
	// holds no raft state yet; ignored otherwise.
	Bootstrap bool

	// Timing, tuned for a LAN by default (raft's own defaults).
	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	// CommitTimeout is how often the leader sends each member the log it
	// has not sent yet, and with it how far the log is committed (default
	// 500ms, see flushCommits: a command's commit reaches every member at
	// once, so this is only the fallback).
	CommitTimeout time.Duration
	// RequestTimeout bounds how long a leader works on one join or forwarded
	// apply request. Default 10s.
	RequestTimeout time.Duration
	// TrailingLogs is how many entries a snapshot (Compact's, or raft's own
	// after 8192 new entries) keeps behind it; a member further behind is
	// sent the snapshot. Zero keeps raft's default (10240).
	TrailingLogs uint64

	// MaxVoters caps how many members vote: an odd number, 5 by default (3
	// is the other sensible value). The group wants the largest odd number
	// of voters not above MaxVoters nor the count of healthy members; the
	// other members are non-voters.
	MaxVoters int
	// VoterFailureTimeout is how long a voter may leave the leader's
	// heartbeats unanswered before a healthy non-voter takes its place (the
	// silent one becomes a non-voter). Default 15s; at least HeartbeatTimeout.
	VoterFailureTimeout time.Duration

	// holdbackMax replaces holdbackMax in tests.
	holdbackMax time.Duration
}

// Defaults of the voter policy.
const (
	DefaultMaxVoters           = 5
	DefaultVoterFailureTimeout = 15 * time.Second
)

// DefaultCommitTimeout is ten times hashicorp/raft's 50ms. Its leader sends
// every member an append request each CommitTimeout even when there is
// nothing new, which is how members learn that the log is committed. With
// 49 members that was ~700 requests a second from an idle leader (12% of a
// core, and ~0.3% on every member). flushCommits tells the members of each
// commit at once instead, so this timer only backs it up.
const DefaultCommitTimeout = 500 * time.Millisecond

// Errors callers branch on.
var (
	// ErrRejected wraps the FSM's refusal of a command; retrying will not help.
	ErrRejected = errors.New("command rejected")
	// ErrShutdown is returned once Shutdown was called.
	ErrShutdown = errors.New("raft is shut down")
)

// Raft is a running raft member.
type Raft struct {
	R *raft.Raft

	cfg   Config
	log   *zap.Logger
	node  *p2p.Node
	self  peer.ID
	store *raftboltdb.BoltStore
	trans *streamTransport
	hold  *holdback // the leader's appends to non-voters wait for the voters

	// ctx ends at Shutdown; request handlers run under it.
	ctx    context.Context
	cancel context.CancelFunc

	// health is what the leader sees of the other members, fed by observer.
	health    *health
	observer  *raft.Observer
	watchDone chan struct{} // closed after raft stopped: ends watch
	kickCh    chan struct{} // asks the reconcile loop for a pass now
	flushCh   chan struct{} // asks flushCommits to tell the members of a commit
	passes    atomic.Int64  // reconcile loop passes, for tests
	wg        sync.WaitGroup

	once    sync.Once
	stopErr error

	// rejoinMu guards RejoinSoon's state: a request under way, the last one.
	rejoinMu  sync.Mutex
	rejoining bool
	rejoined  time.Time

	// forwardCheck, when set, is asked about every command another daemon
	// forwards to this node as leader (see CheckForwarded).
	forwardCheck atomic.Pointer[func(from peer.ID, cmd []byte) error]
}

// CheckForwarded makes the leader ask check about every command another
// daemon forwards to it; an error refuses the command (the caller gets
// ErrRejected). The libp2p connection has authenticated from, so check can
// hold a daemon to what only it may say: its own progress, its own record.
// Commands this node applies itself are not checked.
func (r *Raft) CheckForwarded(check func(from peer.ID, cmd []byte) error) {
	r.forwardCheck.Store(&check)
}

func (c *Config) setDefaults() {
	def := raft.DefaultConfig()
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = def.HeartbeatTimeout
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = def.ElectionTimeout
	}
	if c.LeaderLeaseTimeout <= 0 {
		c.LeaderLeaseTimeout = def.LeaderLeaseTimeout
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxVoters == 0 {
		c.MaxVoters = DefaultMaxVoters
	}
	if c.VoterFailureTimeout == 0 {
		c.VoterFailureTimeout = DefaultVoterFailureTimeout
	}
	if c.holdbackMax <= 0 {
		c.holdbackMax = holdbackMax
	}
}

func (c *Config) validate() error {
	switch {
	case c.Dir == "":
		return errors.New("raft folder is required")
	case c.Node == nil:
		return errors.New("p2p node is required")
	case c.FSM == nil:
		return errors.New("FSM is required")
	case c.Logger == nil:
		return errors.New("logger is required")
	case c.MaxVoters < 1 || c.MaxVoters%2 == 0:
		return fmt.Errorf("max voters %d: want an odd number of at least 1 (3 or 5), so that a majority is never a tie", c.MaxVoters)
	case c.VoterFailureTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("voter failure timeout %v: want at least the heartbeat timeout (%v)", c.VoterFailureTimeout, c.HeartbeatTimeout)
	}
	return nil
}

func (c *Config) raftConfig(id peer.ID, log *zap.Logger) (*raft.Config, error) {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id.String())
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	if c.TrailingLogs > 0 {
		rc.TrailingLogs = c.TrailingLogs
	}
	rc.Logger = newHclog(log)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft timing: %w", err)
	}
	return rc, nil
}

// Start opens (or creates) the raft state in cfg.Dir and starts the member.
// A node with existing state rejoins its cluster on its own; a new node
// without Bootstrap waits for Join.
func Start(ctx context.Context, cfg Config) (*Raft, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	self := cfg.Node.ID()
	log := cfg.Logger.Named("raft")
	rc, err := cfg.raftConfig(self, log)
	if err != nil {
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating raft folder: %w", err)
	}
	r := &Raft{cfg: cfg, log: log, node: cfg.Node, self: self}
	if err := r.open(rc); err != nil {
		r.closeStores()
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.startVoterPolicy()
	r.flushCh = make(chan struct{}, 1)
	r.wg.Add(1)
	go r.flushCommits()
	h := cfg.Node.Host
	h.SetStreamHandler(joinProtocol, func(s network.Stream) { serve(s, cfg.RequestTimeout+time.Second, r.handleJoin) })
	h.SetStreamHandler(applyProtocol, func(s network.Stream) { serve(s, cfg.RequestTimeout+time.Second, r.handleApply) })
	log.Info("raft started", zap.String("folder", cfg.Dir), zap.Int("max_voters", cfg.MaxVoters),
		zap.Duration("voter_failure_timeout", cfg.VoterFailureTimeout))
	return r, nil
}

// startVoterPolicy feeds raft's heartbeat observations to r.health and starts
// the reconcile loop. The observer blocks raft until watch took the
// observation, so that no "resumed" is ever lost; watch therefore runs until
// raft has stopped (Shutdown).
func (r *Raft) startVoterPolicy() {
	r.health = newHealth(time.Now)
	r.kickCh = make(chan struct{}, 1)
	r.watchDone = make(chan struct{})
	ch := make(chan raft.Observation, 64)
	r.observer = raft.NewObserver(ch, true, relevant)
	r.R.RegisterObserver(r.observer)
	r.wg.Add(2)
	go r.watch(ch)
	go r.reconcileLoop()
}

func (r *Raft) watch(ch <-chan raft.Observation) {
	defer r.wg.Done()
	for {
		select {
		case o := <-ch:
			r.health.observe(o.Data)
			if st, ok := o.Data.(raft.RaftState); ok {
				// Forget the members' suffrage until a leader's pass reads
				// it again, and free the appends held by a former leader.
				r.hold.setNonvoters(nil)
				r.hold.wake()
				if st == raft.Leader {
					r.kick()
				}
			}
		case <-r.watchDone:
			return
		}
	}
}

// open builds the stores, the transport and the raft instance.
func (r *Raft) open(rc *raft.Config) error {
	var err error
	r.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(r.cfg.Dir, "raft.db")})
	if err != nil {
		return fmt.Errorf("opening raft log %s: %w", filepath.Join(r.cfg.Dir, "raft.db"), err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(r.cfg.Dir, 2, rc.Logger.Named("snapshots"))
	if err != nil {
		return fmt.Errorf("opening raft snapshots in %s: %w", r.cfg.Dir, err)
	}
	r.trans = newStreamTransport(r.node.Host, 10*time.Second, r.log.Named("transport"))
	r.hold = newHoldback(r.cfg.holdbackMax)
	r.trans.hold = r.hold
	if err := r.bootstrapIfNew(rc, snaps); err != nil {
		return err
	}
	r.R, err = raft.NewRaft(rc, wakingFSM{FSM: r.cfg.FSM, h: r.hold}, r.store, r.store, snaps, r.trans)
	if err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	r.hold.use(r.R)
	return nil
}

func (r *Raft) bootstrapIfNew(rc *raft.Config, snaps raft.SnapshotStore) error {
	if !r.cfg.Bootstrap {
		return nil
	}
	has, err := raft.HasExistingState(r.store, r.store, snaps)
	if err != nil {
		return fmt.Errorf("reading raft state: %w", err)
	}
	if has {
		r.log.Info("raft state found; not bootstrapping a new cluster")
		return nil
	}
	id := raft.ServerID(r.self.String())
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: id, Address: raft.ServerAddress(id)}}}
	if err := raft.BootstrapCluster(rc, r.store, r.store, snaps, r.trans, conf); err != nil {
		return fmt.Errorf("bootstrapping a new raft cluster: %w", err)
	}
	r.log.Info("bootstrapped a new raft cluster with this daemon as its only member")
	return nil
}

func (r *Raft) closeStores() {
	if r.trans != nil {
		r.trans.Close()
	}
	if r.store != nil {
		r.store.Close()
	}
}

// Leader returns the current leader, if one is known.
func (r *Raft) Leader() (peer.ID, bool) {
	_, id := r.R.LeaderWithID()
	if id == "" {
		return "", false
	}
	p, err := peer.Decode(string(id))
	if err != nil {
		return "", false
	}
	return p, true
}

// IsLeader reports whether this node is the leader.
func (r *Raft) IsLeader() bool { return r.R.State() == raft.Leader }

// Members lists the servers of the current configuration, voters and
// non-voters alike: every daemon of the cluster. Membership tells them apart.
func (r *Raft) Members() ([]peer.ID, error) {
	f := r.R.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("reading raft membership: %w", err)
	}
	var ids []peer.ID
	for _, s := range f.Configuration().Servers {
		p, err := peer.Decode(string(s.ID))
		if err != nil {
			return nil, fmt.Errorf("raft member %q is not a peer ID: %w", s.ID, err)
		}
		ids = append(ids, p)
	}
	return ids, nil
}

func (r *Raft) isMember() bool {
	ids, err := r.Members()
	if err != nil {
		return false
	}
	for _, id := range ids {
		if id == r.self {
			return true
		}
	}
	return false
}

// LeadershipChanges delivers true when this node becomes leader and false
// when it stops. Only the latest value is kept if the reader is slow, and
// there is one channel for all readers.
func (r *Raft) LeadershipChanges() <-chan bool { return r.R.LeaderCh() }

// Shutdown stops serving requests, stops raft and closes the transport and
// the store. The p2p node stays up: it belongs to the caller. Safe twice.
func (r *Raft) Shutdown() error {
	r.once.Do(func() {
		h := r.node.Host
		h.RemoveStreamHandler(joinProtocol)
		h.RemoveStreamHandler(applyProtocol)
		r.rejoinMu.Lock() // RejoinSoon adds to r.wg only before this
		r.cancel()
		r.rejoinMu.Unlock()
		err := r.R.Shutdown().Error()
		r.R.DeregisterObserver(r.observer)
		close(r.watchDone)
		r.wg.Wait()
		terr := r.trans.Close()
		serr := r.store.Close()
		if err := errors.Join(err, terr, serr); err != nil {
			r.stopErr = fmt.Errorf("stopping raft: %w", err)
		}
		r.log.Info("raft stopped")
	})
	return r.stopErr
}

// Compact snapshots the state and drops the log behind it (keeping
// TrailingLogs entries) when at least min entries were added since the last
// snapshot. It reports whether it took one.
func (r *Raft) Compact(min uint64) (bool, error) {
	last, err := strconv.ParseUint(r.R.Stats()["last_snapshot_index"], 10, 64)
	if err != nil {
		return false, fmt.Errorf("reading the last snapshot's index: %w", err)
	}
	if r.R.LastIndex() < last+min {
		return false, nil
	}
	if err := r.R.Snapshot().Error(); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return false, nil
		}
		return false, fmt.Errorf("compacting the raft log: %w", err)
	}
	return true, nil
}

// backoff returns the next wait of an exponential backoff.
func backoff(d time.Duration) time.Duration { return min(max(2*d, 50*time.Millisecond), 2*time.Second) }

// wait sleeps for d or until ctx ends or the raft stops.
func (r *Raft) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		return ErrShutdown
	case <-t.C:
		return nil
	}
}
