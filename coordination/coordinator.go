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
	"hash/fnv"
	"maps"
	"slices"
	"sync"
	"time"

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
	Trusted  []peer.ID // operator keys whose announcements are accepted
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
	approval *p2p.Topic

	mu       sync.Mutex
	pending  map[string]plan.HostProgress // progress not yet seen in the plan state, per plan
	heldTill map[string]time.Time         // a pending outage step is not sent before, see progressHold
	holdMore time.Duration                // this host's share of progressHoldSpread
	outage   map[string]int64             // plans in which this host is in its outage, see inOutage
	self     string                       // this daemon's peer ID, as the plan state names its host
	arm      arming                       // the leader's arming of a switch, see armSwitch

	// holds and applyCmd are how armSwitch asks a daemon and applies its
	// command (over libp2p and raft; replaced in tests).
	holds    func(ctx context.Context, host, planID string) bool
	applyCmd func(ctx context.Context, cmd plan.Command) error
	wake     chan struct{}

	leader func() (peer.ID, bool) // the raft leader as this daemon knows it

	proposing inFlight // announcements being proposed, on the leader
}

// New checks cfg and joins the daemons' topics.
func New(cfg Config) (*Coordinator, error) {
	if cfg.Node == nil || cfg.Raft == nil || cfg.FSM == nil || cfg.HostInfo == nil || cfg.Log == nil {
		return nil, errors.New("coordination: node, raft, fsm, host info and logger are required")
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
	h := fnv.New32a()
	h.Write([]byte(cfg.Node.ID()))
	c := &Coordinator{cfg: cfg, log: cfg.Log.Named("coordination"), trusted: map[peer.ID]bool{},
		pending: map[string]plan.HostProgress{}, heldTill: map[string]time.Time{}, outage: map[string]int64{}, wake: make(chan struct{}, 1),
		self: cfg.Node.ID().String(), holdMore: time.Duration(h.Sum32()) % progressHoldSpread, leader: cfg.Raft.Leader}
	c.holds = c.holdsByP2P
	c.applyCmd = func(ctx context.Context, cmd plan.Command) error {
		_, err := cfg.Raft.Apply(ctx, cmd.Encode())
		return err
	}
	cfg.Raft.CheckForwarded(checkForwarded)
	for _, id := range cfg.Trusted {
		c.trusted[id] = true
	}
	var err error
	if c.announce, err = cfg.Node.Topic(AnnounceTopic, c.validateAnnouncement); err != nil {
		return nil, fmt.Errorf("joining the announcement topic: %w", err)
	}
	if c.approval, err = cfg.Node.Topic(ApprovalTopic, c.validateApproval); err != nil {
		return nil, fmt.Errorf("joining the approval topic: %w", err)
	}
	return c, nil
}

// Run serves the topics, registration, progress delivery and deadlines until ctx ends.
func (c *Coordinator) Run(ctx context.Context) error {
	holds := serveHolds(c.cfg.Node.Host, c.cfg.FSM)
	defer holds.Close()
	proposals := c.serveProposals(c.cfg.Node.Host)
	defer proposals.Close()
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){c.announcements, c.progressOut, c.housekeeping, c.approvals} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	c.announce.Close()
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
// leader, turns passed deadlines into timeouts and arms switches.
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
			c.armSwitch(ctx)
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
//
// It waits while this host is in its outage (see inOutage): the peer's new
// version would be a second command per host, at the moment every host
// restarts its peer, and the host's verified report records that version.
func (c *Coordinator) register(ctx context.Context) bool {
	if c.inOutage() {
		return false
	}
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

// inOutage reports whether this host, in a plan not over, is in its outage
// (stopping, swapping or starting its peer) as far as this daemon's copy of
// the plan state knows: from its first report of a step of the outage until
// that copy holds the report of its next step. Not until the leader took the
// report: this daemon applies it later, and registering in between would
// send the host record the report is about to update.
func (c *Coordinator) inOutage() bool {
	c.mu.Lock()
	ends := maps.Clone(c.outage)
	c.mu.Unlock()
	if len(ends) == 0 {
		return false
	}
	over := map[string]bool{}
	c.cfg.FSM.View(func(s *plan.State) {
		for id, seq := range ends {
			p, ok := s.Plans[id]
			if !ok || p.Phase.Terminal() {
				over[id] = true
				continue
			}
			if h, ok := p.Hosts[c.self]; ok && seq != 0 && h.Seq >= seq {
				over[id] = true
			}
		}
	})
	c.mu.Lock()
	for id := range over {
		if c.outage[id] == ends[id] { // not a new outage meanwhile
			delete(c.outage, id)
		}
	}
	c.mu.Unlock()
	return len(over) < len(ends)
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

// Report implements agent.Reporter: the latest progress per plan is sent to
// the raft leader until the leader has applied it (or the plan ended).
func (c *Coordinator) Report(planID string, p plan.HostProgress) {
	hosts := c.planHosts(planID)
	c.mu.Lock()
	now := c.cfg.Clock()
	p.Seq = now.UnixNano()
	old, ok := c.pending[planID]
	if ok && old.Seq >= p.Seq {
		p.Seq = old.Seq + 1 // two reports within one clock tick keep their order
	}
	if outageStep(p.Step) {
		c.outage[planID] = 0
	} else if _, ok := c.outage[planID]; ok {
		c.outage[planID] = p.Seq // the outage ends once the state holds this report
	}
	switch {
	case !outageStep(p.Step):
		delete(c.heldTill, planID)
	case (!ok || !outageStep(old.Step)) && hosts >= progressHoldHosts:
		c.heldTill[planID] = now.Add(progressHold + c.holdMore)
	}
	c.pending[planID] = p
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// progressRetry is how soon a report the leader did not take is sent again.
const progressRetry = 500 * time.Millisecond

// A host passes through stopping, swapping and starting within a second or
// so of the switch time, and all hosts together. Sent as they come, those
// reports reached the leader as 50 at once, then 50 more, each applied and
// replicated to every daemon, while the leader's own host was stopping,
// backing up and starting its peer (at N=50 the leader's host was the last
// to start, by a second, and every peer's membership waited for it). The
// plan's decisions need none of them: a report of one of these steps waits
// progressHold (plus up to progressHoldSpread, by host, so the hosts' reports
// do not arrive together), and the host's later steps replace it meanwhile;
// any other step is sent at once. So a host whose peer is healthy again
// within progressHold sends its verification alone, and one that takes
// longer shows "starting" after it. The hold was 1 s: at N=50 (a 4 s
// outage) every host's "starting" report still reached every daemon in the
// middle of the outage. `upgraded status` shows the outage steps up to 5.5 s
// late. Plans of fewer than progressHoldHosts hosts, whose
// few reports cost little, show them as they come.
const (
	progressHold       = 5 * time.Second
	progressHoldSpread = 500 * time.Millisecond
	progressHoldHosts  = 10
)

// planHosts is the number of hosts in plan id (0 when the state lacks it).
func (c *Coordinator) planHosts(id string) int {
	if c.cfg.FSM == nil {
		return 0
	}
	n := 0
	c.cfg.FSM.View(func(s *plan.State) {
		if p, ok := s.Plans[id]; ok {
			n = len(p.Hosts)
		}
	})
	return n
}

func outageStep(s plan.Step) bool {
	return s == plan.StepStopping || s == plan.StepSwapping || s == plan.StepStarting
}

// held reports whether the pending report of planID waits for its hold.
// Called with c.mu held.
func (c *Coordinator) held(planID string, now time.Time) bool {
	till, ok := c.heldTill[planID]
	return ok && now.Before(till)
}

// progressOut sends each plan's latest pending report to the raft leader as
// a progress command, and again every progressRetry until one is applied.
//
// A report goes to the leader alone (raftnet forwards the command over the
// one libp2p stream, whose authenticated peer the leader holds to the
// reported host, see checkForwarded). It used to be published on a pubsub
// topic that every daemon validated; at 50 hosts, with every host re-sending
// until its own copy of the state showed the report, that traffic took most
// of the machine and verified reports reached the state up to a minute late.
// Reports made while one is on its way coalesce: only the latest is sent.
func (c *Coordinator) progressOut(ctx context.Context) {
	t := time.NewTicker(progressRetry)
	defer t.Stop()
	me := c.self
	var failing failStreak
	for {
		c.mu.Lock()
		now := c.cfg.Clock()
		todo := make(map[string]plan.HostProgress, len(c.pending))
		for id, p := range c.pending {
			if !c.held(id, now) { // a held one goes at a later tick, if no newer report replaced it
				todo[id] = p
			}
		}
		c.mu.Unlock()
		for id, p := range todo {
			done := c.applied(id, me, p)
			if !done {
				var err error
				if done, err = c.deliver(ctx, id, me, p); err != nil && ctx.Err() == nil {
					c.warnUndelivered(&failing, id, p, err)
				}
			}
			if done {
				failing = failStreak{}
				c.delivered(id, p)
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

// delivered forgets report p of plan planID, now in the plan state (or
// refused for good), unless a newer one replaced it meanwhile.
func (c *Coordinator) delivered(planID string, p plan.HostProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.pending[planID]; ok && cur.Seq == p.Seq {
		delete(c.pending, planID)
		delete(c.heldTill, planID)
	}
}

// deliver applies one report through the raft leader. It reports whether
// the report needs no further sending: applied, or refused for good (the
// plan has ended or does not know this host); and, when it does, why the
// attempt failed.
func (c *Coordinator) deliver(ctx context.Context, planID, me string, p plan.HostProgress) (bool, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.cfg.Raft.Apply(actx, plan.Command{Op: plan.OpProgress, PlanID: planID, HostID: me, Progress: &p}.Encode())
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, raftnet.ErrRejected):
		c.log.Info("the plan state did not take this host's report", zap.String("plan", planID),
			zap.String("step", string(p.Step)), zap.Error(err))
		return true, nil
	default:
		return false, err
	}
}

// failStreak is how long this host's reports have been failing to reach the leader.
type failStreak struct {
	since, warned time.Time
}

// Thresholds of warnUndelivered.
const (
	undeliveredWarnAfter = 10 * time.Second // a leader election takes a few seconds; longer is news
	undeliveredWarnEvery = 30 * time.Second
)

// warnUndelivered logs a failed send at debug level, and tells the operator
// (at most every undeliveredWarnEvery) once reports have failed for
// undeliveredWarnAfter: a plan waits on this host's progress, and the
// leader never sees it.
func (c *Coordinator) warnUndelivered(f *failStreak, planID string, p plan.HostProgress, err error) {
	now := c.cfg.Clock()
	if f.since.IsZero() {
		f.since = now
	}
	c.log.Debug("progress report not delivered yet; sending it again", zap.String("plan", planID),
		zap.String("step", string(p.Step)), zap.Error(err))
	if now.Sub(f.since) < undeliveredWarnAfter || now.Sub(f.warned) < undeliveredWarnEvery {
		return
	}
	f.warned = now
	leader, known := c.leader()
	c.log.Warn("this host's progress has not reached the raft leader; still trying", zap.String("plan", planID),
		zap.String("step", string(p.Step)), zap.Duration("failing_for", now.Sub(f.since).Round(time.Second)),
		zap.Bool("leader_known", known), zap.Stringer("leader", leader), zap.Error(err))
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

// checkForwarded is the leader's check of a command another daemon forwards:
// a daemon reports only its own progress and registers only its own host
// record. (Announcements and approvals carry operator signatures of their
// own; the other commands are the leader's or the operator's.)
func checkForwarded(from peer.ID, b []byte) error {
	var cmd plan.Command
	if err := json.Unmarshal(b, &cmd); err != nil {
		return fmt.Errorf("malformed command: %w", err)
	}
	switch cmd.Op {
	case plan.OpProgress:
		if cmd.HostID != from.String() {
			return fmt.Errorf("daemon %s reported progress for another host (%s)", from, cmd.HostID)
		}
	case plan.OpRegister:
		if cmd.Host == nil || cmd.Host.ID != from.String() {
			return fmt.Errorf("daemon %s sent the host record of another daemon", from)
		}
	}
	return nil
}
