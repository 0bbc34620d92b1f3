// Package coordination is how the daemons decide together: a libp2p swarm
// (p2p) private to the cluster, signed messages (envelope), a raft group
// (raftnet) replicating the plan state (plan), and the Coordinator, which
// turns trusted announcements into plans, carries progress reports into the
// plan state, and, on the raft leader, enforces the deadlines of each phase.
package coordination

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/coordination/raftnet"
)

// Config wires a Coordinator.
type Config struct {
	Node     *p2p.Node
	Raft     *raftnet.Raft
	FSM      *plan.FSM
	Key      crypto.PrivKey // the daemon's identity, signs its progress reports
	Trusted  []peer.ID      // operator keys whose announcements are accepted
	Timeouts plan.Timeouts
	// HostInfo returns this host's record for the plan state (version read from the local peer).
	HostInfo func(ctx context.Context) (plan.Host, error)
	Log      *zap.Logger
	Clock    func() time.Time
	// ClockSkew tolerated on announcements issued "in the future" (default 2 minutes).
	ClockSkew time.Duration
	// Tick is how often registration and deadlines are checked (default 250ms).
	Tick time.Duration
	// OnReject, when set, is told the reason class of every refused
	// announcement or approval (for metrics): untrusted, malformed, expired,
	// replayed or refused.
	OnReject func(reason string)
}

// Coordinator is one daemon's part of the group's decisions.
type Coordinator struct {
	cfg     Config
	log     *zap.Logger
	trusted map[peer.ID]bool

	announce *p2p.Topic
	progress *p2p.Topic
	approval *p2p.Topic

	mu      sync.Mutex
	pending map[string]plan.HostProgress // progress not yet seen in the plan state, per plan
	wake    chan struct{}
}

// New checks cfg and joins the daemons' topics.
func New(cfg Config) (*Coordinator, error) {
	if cfg.Node == nil || cfg.Raft == nil || cfg.FSM == nil || cfg.Key == nil || cfg.HostInfo == nil || cfg.Log == nil {
		return nil, errors.New("coordination: node, raft, fsm, key, host info and logger are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = 2 * time.Minute
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 250 * time.Millisecond
	}
	c := &Coordinator{cfg: cfg, log: cfg.Log.Named("coordination"), trusted: map[peer.ID]bool{},
		pending: map[string]plan.HostProgress{}, wake: make(chan struct{}, 1)}
	for _, id := range cfg.Trusted {
		c.trusted[id] = true
	}
	var err error
	if c.announce, err = cfg.Node.Topic(AnnounceTopic, c.validateAnnouncement); err != nil {
		return nil, fmt.Errorf("joining the announcement topic: %w", err)
	}
	if c.progress, err = cfg.Node.Topic(ProgressTopic, c.validateProgress); err != nil {
		return nil, fmt.Errorf("joining the progress topic: %w", err)
	}
	if c.approval, err = cfg.Node.Topic(ApprovalTopic, c.validateApproval); err != nil {
		return nil, fmt.Errorf("joining the approval topic: %w", err)
	}
	return c, nil
}

// Run serves the topics, registration, progress delivery and deadlines until ctx ends.
func (c *Coordinator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){c.announcements, c.progressIn, c.progressOut, c.housekeeping, c.approvals} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	c.announce.Close()
	c.progress.Close()
	c.approval.Close()
	return nil
}

func (c *Coordinator) announcements(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-c.announce.Messages():
			if !ok {
				return
			}
			c.handleAnnouncement(ctx, m.Data)
		}
	}
}

// housekeeping registers this host when its record changed and, on the
// leader, turns passed deadlines into timeouts.
func (c *Coordinator) housekeeping(ctx context.Context) {
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	var lastReg time.Time
	for {
		if c.cfg.Clock().Sub(lastReg) > 2*time.Second {
			if c.register(ctx) {
				lastReg = c.cfg.Clock()
			}
		}
		if c.cfg.Raft.IsLeader() {
			c.enforceDeadline(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// register records this host in the plan state when its record is missing or
// out of date. It reports whether the state is up to date.
func (c *Coordinator) register(ctx context.Context) bool {
	ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	h, err := c.cfg.HostInfo(ictx)
	if err != nil {
		c.log.Debug("host record not available yet", zap.Error(err))
		return false
	}
	var current *plan.Host
	c.cfg.FSM.View(func(s *plan.State) {
		if x, ok := s.Hosts[h.ID]; ok {
			cp := *x
			current = &cp
		}
	})
	if current != nil && sameHost(*current, h) {
		return true
	}
	if _, err := c.cfg.Raft.Apply(ictx, plan.Command{Op: plan.OpRegister, Host: &h}.Encode()); err != nil {
		c.log.Debug("registering this host", zap.Error(err))
		return false
	}
	c.log.Info("host registered", zap.String("cluster_peer", h.ClusterPeer), zap.String("version", h.Version))
	return true
}

func sameHost(a, b plan.Host) bool {
	return a.ClusterPeer == b.ClusterPeer && a.Version == b.Version && a.Name == b.Name && a.Consensus == b.Consensus &&
		a.Policy.Equal(b.Policy) &&
		slices.Equal(a.Addrs, b.Addrs) && slices.Equal(a.ClusterAddrs, b.ClusterAddrs)
}

func (c *Coordinator) enforceDeadline(ctx context.Context) {
	var cmd *plan.Command
	c.cfg.FSM.View(func(s *plan.State) {
		p := s.CurrentPlan()
		now := c.cfg.Clock()
		switch {
		case p == nil:
		case p.Phase == plan.PhaseSwitching && p.Proc() == plan.Rolling && !p.NextBatchAt.IsZero() && !now.Before(p.NextBatchAt):
			cmd = &plan.Command{Op: plan.OpTick, PlanID: p.ID}
		case !p.Deadline.IsZero() && now.After(p.Deadline):
			cmd = &plan.Command{Op: plan.OpTimeout, PlanID: p.ID, Phase: p.Phase}
		}
	})
	if cmd == nil {
		return
	}
	if cmd.Op == plan.OpTimeout {
		c.log.Warn("phase deadline passed", zap.String("plan", cmd.PlanID), zap.String("phase", string(cmd.Phase)))
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.cfg.Raft.Apply(actx, cmd.Encode()); err != nil {
		c.log.Error("recording the end of a wait", zap.String("plan", cmd.PlanID), zap.String("op", string(cmd.Op)), zap.Error(err))
	}
}

// progressMsg is a host's progress report as it travels on the progress topic.
type progressMsg struct {
	PlanID   string            `json:"plan_id"`
	HostID   string            `json:"host_id"`
	Progress plan.HostProgress `json:"progress"`
}

// Report implements agent.Reporter: the latest progress per plan is published
// until the plan state shows it (or the plan ended).
func (c *Coordinator) Report(planID string, p plan.HostProgress) {
	c.mu.Lock()
	p.Seq = c.cfg.Clock().UnixNano()
	if old, ok := c.pending[planID]; ok && old.Seq >= p.Seq {
		p.Seq = old.Seq + 1 // two reports within one clock tick keep their order
	}
	c.pending[planID] = p
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// progressOut publishes pending reports, and again every half second until
// the plan state reflects them.
func (c *Coordinator) progressOut(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	me := c.cfg.Node.ID().String()
	for {
		c.mu.Lock()
		todo := make(map[string]plan.HostProgress, len(c.pending))
		for id, p := range c.pending {
			todo[id] = p
		}
		c.mu.Unlock()
		for id, p := range todo {
			if c.applied(id, me, p) {
				c.mu.Lock()
				if cur, ok := c.pending[id]; ok && sameProgress(cur, p) {
					delete(c.pending, id)
				}
				c.mu.Unlock()
				continue
			}
			if err := c.publishProgress(ctx, id, me, p); err != nil && ctx.Err() == nil {
				c.log.Debug("publishing progress", zap.String("plan", id), zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-t.C:
		}
	}
}

func (c *Coordinator) publishProgress(ctx context.Context, planID, me string, p plan.HostProgress) error {
	b, err := json.Marshal(progressMsg{PlanID: planID, HostID: me, Progress: p})
	if err != nil {
		return fmt.Errorf("encoding progress: %w", err)
	}
	data, err := sealWith(c.cfg.Key, ProgressType, b)
	if err != nil {
		return err
	}
	return c.progress.Publish(ctx, data)
}

// applied reports whether the plan state already shows p for host, or will never take it.
func (c *Coordinator) applied(planID, host string, p plan.HostProgress) bool {
	var done bool
	c.cfg.FSM.View(func(s *plan.State) {
		pl, ok := s.Plans[planID]
		if !ok {
			return
		}
		if pl.Phase.Terminal() {
			done = true
			return
		}
		if h, ok := pl.Hosts[host]; ok && sameProgress(*h, p) {
			done = true
		}
	})
	return done
}

func sameProgress(a, b plan.HostProgress) bool {
	return a.Step == b.Step && a.Detail == b.Detail && a.Pins == b.Pins && a.BackupPins == b.BackupPins &&
		a.Version == b.Version && (b.Error == "" || a.Error == b.Error)
}

// progressIn applies the progress reports it receives, on the leader. Every
// host republishes its latest report until the state shows it, so with many
// hosts the same reports arrive again and again: they are coalesced to the
// latest per host, and applied concurrently (raft batches concurrent applies
// into one round trip) rather than one raft round trip per message.
func (c *Coordinator) progressIn(ctx context.Context) {
	q := &progressQueue{latest: map[string]progressMsg{}, kick: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.applyProgress(ctx, q)
	}()
	defer func() { <-done }()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-c.progress.Messages():
			if !ok {
				return
			}
			if !c.cfg.Raft.IsLeader() {
				continue
			}
			var pm progressMsg
			payload, _, err := openFrom(m.Data, ProgressType)
			if err != nil || json.Unmarshal(payload, &pm) != nil {
				continue
			}
			q.put(pm)
		}
	}
}

// progressQueue holds the latest report received from each host of each plan.
type progressQueue struct {
	mu     sync.Mutex
	latest map[string]progressMsg // by plan and host
	kick   chan struct{}
}

func (q *progressQueue) put(pm progressMsg) {
	key := pm.PlanID + "/" + pm.HostID
	q.mu.Lock()
	if old, ok := q.latest[key]; !ok || pm.Progress.Seq >= old.Progress.Seq {
		q.latest[key] = pm
	}
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *progressQueue) take() map[string]progressMsg {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.latest
	q.latest = map[string]progressMsg{}
	return out
}

// progressApplyParallel bounds the raft applies in flight for progress.
const progressApplyParallel = 32

func (c *Coordinator) applyProgress(ctx context.Context, q *progressQueue) {
	sem := make(chan struct{}, progressApplyParallel)
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.kick:
		}
		var wg sync.WaitGroup
		for _, pm := range q.take() {
			if c.applied(pm.PlanID, pm.HostID, pm.Progress) {
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func(pm progressMsg) {
				defer func() { <-sem; wg.Done() }()
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				p := pm.Progress
				if _, err := c.cfg.Raft.Apply(actx, plan.Command{Op: plan.OpProgress, PlanID: pm.PlanID, HostID: pm.HostID, Progress: &p}.Encode()); err != nil {
					c.log.Debug("applying progress", zap.String("plan", pm.PlanID), zap.String("host", pm.HostID), zap.Error(err))
				}
			}(pm)
		}
		wg.Wait()
	}
}
