// Package daemon wires one upgraded daemon together from its configuration:
// the swarm, the raft group, the plan state, the coordinator, the host agent
// and the control socket; and shuts them down in order.
package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination"
	"github.com/upgraded/upgraded/coordination/artifacts"
	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/coordination/raftnet"
	"github.com/upgraded/upgraded/coordination/recoverynet"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/internal/history"
	"github.com/upgraded/upgraded/internal/metrics"
	"github.com/upgraded/upgraded/internal/svcinstall"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/agent"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/sidecar/dockerrunner"
	"github.com/upgraded/upgraded/sidecar/execrunner"
	"github.com/upgraded/upgraded/sidecar/systemdrunner"
	"github.com/upgraded/upgraded/statebackup"
)

// Daemon is one running upgraded.
type Daemon struct {
	cfg *config.Config
	log *zap.Logger

	svc      *cluster.ServiceConfig
	peerID   string
	node     *p2p.Node
	fsm      *plan.FSM
	raft     *raftnet.Raft
	coord    *coordination.Coordinator
	agent    *agent.Agent
	runner   sidecar.Runner
	api      *cluster.Client
	control  *control.Server
	recovery *recoverynet.Server // answers other daemons' recovery requests (recover.go)
	// artifacts serves the artifacts this host staged to the other daemons (artifacts.go).
	artifacts *artifacts.Server

	metrics    *metrics.Metrics
	metricsSrv *metrics.Server // nil unless metrics_address is set

	backupMu  sync.Mutex // one backup, restore or prune at a time (backups.go)
	recoverMu sync.Mutex // one recovery carried out at a time (recover.go, recover_resume.go)
	// recoverBusy names the recovery step running on this host for some daemon ("" when none): an inventory says
	// it, so that no other recovery starts over a step whose orchestrator died (recover.go).
	recoverBusy atomic.Value

	// announced is the last announcement the raft leader answered for until
	// this daemon's plan state holds it (see awaitAnnounced).
	announced atomic.Pointer[string]

	leanGC bool // set GOGC by the plan state (gc.go)
}

// New builds every component; nothing runs until Run.
func New(ctx context.Context, cfg *config.Config, bootstrap []string, log *zap.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log}
	if len(bootstrap) > 0 {
		cfg.Bootstrap = bootstrap
	}
	var err error
	if d.svc, err = cluster.LoadServiceConfig(cfg.ClusterConfig); err != nil {
		return nil, fmt.Errorf("reading the cluster's service.json: %w", err)
	}
	if d.peerID, err = cluster.LoadPeerID(cfg.ClusterConfig); err != nil {
		return nil, fmt.Errorf("reading the cluster peer's identity: %w", err)
	}
	apiURL, err := cluster.APIURL(d.svc.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's REST API address: %w", err)
	}
	d.api = cluster.NewClient(apiURL)
	if err := d.buildNetwork(ctx); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.buildHost(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.serveRecovery(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) buildNetwork(ctx context.Context) error {
	var err error
	d.fsm = plan.NewFSM(d.log)
	d.node, err = p2p.New(ctx, p2p.Config{IdentityFile: d.cfg.IdentityFile(), ListenAddrs: d.cfg.Listen,
		Secret: d.svc.Secret, Bootstrap: d.cfg.Bootstrap, Keep: d.cfg.ConnectedDaemons, Logger: d.log,
		Quiet: d.restarting, OnRecord: d.addrsOnRecord})
	if err != nil {
		return fmt.Errorf("starting the daemons' swarm: %w", err)
	}
	rec, err := history.Open(d.cfg.HistoryFile())
	if err != nil {
		return err
	}
	d.metrics = metrics.New(metricsSource{d})
	d.fsm.Observe(func(s *plan.State, changed string) {
		if err := rec.Observe(s, changed); err != nil {
			d.log.Warn("recording the plan history", zap.Error(err))
		}
		d.metrics.Observe(s)
	})
	d.raft, err = raftnet.Start(ctx, raftnet.Config{Dir: d.cfg.RaftDir(), Node: d.node, FSM: d.fsm, Logger: d.log,
		Bootstrap: len(d.cfg.Bootstrap) == 0, MaxVoters: d.cfg.Raft.MaxVoters, VoterFailureTimeout: d.cfg.Raft.VoterFailureTimeout,
		HeartbeatTimeout: d.cfg.Raft.HeartbeatTimeout, ElectionTimeout: d.cfg.Raft.HeartbeatTimeout,
		// A lease as long as the heartbeat timeout: with half of it, a leader
		// on a host busy staging binaries stepped down while its voters were
		// merely slow to answer (N=50 benchmark), and the election cost more
		// than the lease saves.
		LeaderLeaseTimeout: d.cfg.Raft.HeartbeatTimeout,
		// The log is compacted while no plan runs (see compactWhileIdle),
		// keeping this many entries behind each snapshot.
		TrailingLogs: compactEvery})
	if err != nil {
		return fmt.Errorf("starting the raft group of daemons: %w", err)
	}
	trusted := make([]peer.ID, 0, len(d.cfg.Trust))
	for _, s := range d.cfg.Trust {
		id, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("trusted signer %q is not a peer ID: %w", s, err)
		}
		trusted = append(trusted, id)
	}
	d.coord, err = coordination.New(coordination.Config{Node: d.node, Raft: d.raft, FSM: d.fsm, Trusted: trusted,
		Timeouts: plan.Timeouts{Prepare: d.cfg.Timeouts.Prepare, Switch: d.cfg.Timeouts.Switch,
			Rollback: d.cfg.Timeouts.Rollback, Barrier: d.cfg.Timeouts.Barrier},
		HostInfo: d.hostInfo, Log: d.log, OnReject: d.metrics.Rejected})
	if err != nil {
		return fmt.Errorf("starting coordination: %w", err)
	}
	return nil
}

func (d *Daemon) buildHost() error {
	bins, err := binstore.Open(d.cfg.BinDir())
	if err != nil {
		return fmt.Errorf("opening the binary store: %w", err)
	}
	var images agent.ImageStager
	switch d.cfg.Runner.Type {
	case config.RunnerDocker:
		// A missing or forbidden socket is an error now, before any plan
		// could touch the running peer.
		socket, serr := dockerrunner.SocketFromHost(d.cfg.Runner.Docker.Socket)
		if serr != nil {
			return fmt.Errorf("setting up the docker runner: %w", serr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var dr *dockerrunner.Runner
		dr, err = dockerrunner.New(ctx, dockerrunner.Config{Engine: dockerrunner.NewEngine(socket),
			Container: d.cfg.Runner.Docker.Container, StateDir: filepath.Join(d.cfg.RunDir(), "docker"),
			Version: bins.Current, ServicePath: d.cfg.Runner.Docker.ServicePath,
			StopTimeout: d.cfg.Runner.StopTimeout, Logger: d.log.Named("docker")})
		cancel()
		if err == nil {
			d.runner, images = dr, dr
		}
	case config.RunnerSystemd:
		// A missing unit or permission rule is an error now, before any plan
		// could touch the running peer.
		if err := svcinstall.Check(context.Background(), svcinstall.CheckConfig{Unit: d.cfg.Runner.Unit}); err != nil {
			return fmt.Errorf("checking the systemd runner: %w", err)
		}
		d.runner, err = systemdrunner.New(systemdrunner.Config{Unit: d.cfg.Runner.Unit,
			ExtraArgsFile: filepath.Join(d.cfg.RunDir(), "ipfs-cluster.env"), Logger: d.log.Named("systemd")})
	default:
		d.runner, err = execrunner.New(execrunner.Config{
			Binary:           func() (string, error) { return bins.ServicePath(), nil },
			ClusterConfigDir: d.cfg.ClusterConfig, PIDFile: filepath.Join(d.cfg.RunDir(), "ipfs-cluster-service.pid"),
			LogDir: d.cfg.LogDir(), StopTimeout: d.cfg.Runner.StopTimeout, Logger: d.log.Named("exec")})
	}
	if err != nil {
		return fmt.Errorf("setting up the %s runner: %w", d.cfg.Runner.Type, err)
	}
	backups, err := statebackup.Open(d.cfg.BackupDir(), d.log)
	if err != nil {
		return fmt.Errorf("opening the backup store: %w", err)
	}
	journal, err := agent.OpenJournal(d.cfg.JournalDir())
	if err != nil {
		return err
	}
	sharer, err := d.shareArtifacts()
	if err != nil {
		return err
	}
	d.agent, err = agent.New(agent.Config{HostID: d.node.ID().String(), ClusterDir: d.cfg.ClusterConfig, Runner: d.runner,
		API: d.api, Bins: bins, Backups: backups, Journal: journal, StagingDir: d.cfg.StagingDir(), Reporter: d.coord,
		Plans: d.fsm, Log: d.log, VerifyTimeout: d.cfg.Timeouts.Verify, Images: images, Artifacts: sharer, HoldPeer: d.holdPeer(journal)})
	if err != nil {
		return err
	}
	d.control, err = control.Listen(d.cfg.SocketPath(), d, d.log)
	return err
}

// hostInfo is this host's record in the plan state.
func (d *Daemon) hostInfo(ctx context.Context) (plan.Host, error) {
	id, err := d.api.ID(ctx)
	if err != nil {
		return plan.Host{}, fmt.Errorf("asking the local peer its id and version: %w", err)
	}
	addrs := make([]string, 0)
	for _, a := range d.node.Addrs() {
		addrs = append(addrs, a.String())
	}
	return plan.Host{ID: d.node.ID().String(), ClusterPeer: d.peerID, Name: d.svc.PeerName, Addrs: addrs,
		Version: id.Version, Consensus: d.svc.Consensus, ClusterAddrs: id.Addresses,
		Policy: plan.NewPolicy(d.cfg.Trust, d.cfg.Approvals).WithWindows(d.cfg.Windows)}, nil
}

// Run runs the daemon until ctx ends, then shuts down in order.
func (d *Daemon) Run(ctx context.Context) error {
	d.log.Info("upgraded daemon running", zap.String("id", d.node.ID().String()), zap.Strings("addrs", d.addrs()),
		zap.String("cluster_peer", d.peerID), zap.String("runner", d.cfg.Runner.Type))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if len(d.cfg.Bootstrap) > 0 {
		go func() {
			if err := d.raft.Join(ctx, d.cfg.Bootstrap); err != nil && ctx.Err() == nil {
				d.log.Error("joining the daemons' raft group", zap.Error(err))
			}
		}()
	}
	if d.cfg.MetricsAddress != "" {
		srv, err := d.metrics.Listen(d.cfg.MetricsAddress, d.log.Named("metrics"))
		if err != nil {
			return err
		}
		d.metricsSrv = srv
		defer srv.Close()
	}
	var wg sync.WaitGroup
	if d.leanGC {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.tuneGC(ctx, debug.SetGCPercent)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		compactWhileIdle(ctx, d.planRunning, func() (bool, error) { return d.raft.Compact(compactEvery) }, compactCheck, d.log)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		hasLeader := func() bool { _, ok := d.raft.Leader(); return ok }
		// Unheard, the daemon also asks to be added again, in case the group
		// forgot it (see raftnet.RejoinSoon).
		unheard := func() { d.node.AdvertiseSoon(); d.raft.RejoinSoon() }
		advertiseWhileLeaderless(ctx, hasLeader, unheard, leaderlessAdvertAfter, time.Second, d.log)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		list := func() (out []peer.AddrInfo) {
			d.fsm.View(func(s *plan.State) { out = registeredAddrs(s, d.node.ID()) })
			return out
		}
		keepRegisteredAddrs(ctx, list, d.node.Host.Peerstore(), d.node.KnowDaemon, registeredAddrsEvery, d.log)
	}()
	errs := make(chan error, 3)
	for _, run := range []func(context.Context) error{d.coord.Run, d.agent.Run, d.runBackups} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.resumeRecovery(ctx)
	}()
	go func() {
		if err := d.control.Serve(); err != nil {
			errs <- err
			cancel()
		}
	}()
	<-ctx.Done()
	d.control.Close()
	wg.Wait()
	d.log.Info("upgraded daemon stopping")
	if d.cfg.StopPeerOnExit {
		sctx, scancel := context.WithTimeout(context.Background(), d.cfg.Runner.StopTimeout+5*time.Second)
		if err := d.runner.Stop(sctx); err != nil {
			d.log.Error("stopping the cluster peer on exit", zap.Error(err))
		}
		scancel()
	}
	d.Close()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// Close releases everything New built; safe twice.
func (d *Daemon) Close() {
	d.stopRecovery()
	d.stopArtifacts()
	if c, ok := d.runner.(interface{ Close(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Close(ctx)
		cancel()
	}
	if d.raft != nil {
		if err := d.raft.Shutdown(); err != nil {
			d.log.Warn("shutting down raft", zap.Error(err))
		}
	}
	if d.node != nil {
		_ = d.node.Close()
	}
}

func (d *Daemon) addrs() []string {
	var out []string
	for _, a := range d.node.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// Status implements control.Backend.
func (d *Daemon) Status() control.Status {
	d.awaitAnnounced()
	st := d.fsm.State()
	s := control.Status{Self: control.Self{ID: d.node.ID().String(), Addrs: d.addrs(), ClusterPeer: d.peerID},
		Hosts: st.Hosts}
	for _, id := range d.node.Host.Network().Peers() {
		if _, ok := st.Hosts[id.String()]; ok {
			s.Self.Connected++
		}
	}
	if l, ok := d.raft.Leader(); ok {
		s.Leader = l.String()
	}
	if ms, err := d.raft.Membership(); err == nil {
		for _, m := range ms {
			s.Members = append(s.Members, m.ID.String())
			if m.Voter {
				s.Voters = append(s.Voters, m.ID.String())
			}
		}
	}
	if p := st.CurrentPlan(); p != nil {
		s.Plan = p
	} else if st.Last != "" {
		s.Plan = st.Plans[st.Last]
	}
	return s
}

// restarting tells whether a plan is restarting peers: switching, or rolling
// back. The daemon's swarm holds its periodic chatter meanwhile (p2p
// Config.Quiet).
func (d *Daemon) restarting() bool {
	var yes bool
	d.fsm.View(func(s *plan.State) {
		if p := s.CurrentPlan(); p != nil {
			yes = p.Phase == plan.PhaseSwitching || p.Phase == plan.PhaseRollingBack
		}
	})
	return yes
}

// addrsOnRecord tells whether the plan state records this daemon's current
// libp2p addresses: every daemon hands its swarm the registered addresses
// (see keepRegisteredAddrs), so the swarm's periodic advertisements of them
// are redundant (p2p Config.OnRecord).
func (d *Daemon) addrsOnRecord() bool {
	own := d.addrs()
	slices.Sort(own)
	var recorded []string
	d.fsm.View(func(s *plan.State) {
		if h, ok := s.Hosts[d.node.ID().String()]; ok {
			recorded = slices.Clone(h.Addrs)
		}
	})
	slices.Sort(recorded)
	return len(own) > 0 && slices.Equal(recorded, own)
}

// Announce implements control.Backend.
//
// When the raft leader answered, the plan is committed but this daemon's copy
// of the log may not hold it yet: Status and Plan wait for it (see
// awaitAnnounced), so that what this host tells next agrees with the answer.
func (d *Daemon) Announce(ctx context.Context, env []byte) (*plan.Announcement, *control.PlanAnswer, error) {
	d.awaitAnnounced() // checked against the plan state that holds the last answer
	a, out, err := d.coord.Announce(ctx, env)
	if err != nil || out == nil {
		return a, nil, err
	}
	d.announced.Store(&a.ID)
	return a, &control.PlanAnswer{Plan: out.Plan, Rejected: out.Rejected}, nil
}

// announcedWait bounds how long a read of the plan state waits for the plan
// the leader answered for: a daemon cut off from the leader right after the
// answer serves what it has.
const announcedWait = 2 * time.Second

// awaitAnnounced waits until this daemon's plan state holds the last
// announcement the raft leader answered for, at most announcedWait.
func (d *Daemon) awaitAnnounced() {
	id := d.announced.Load()
	if id == nil {
		return
	}
	changed, stop := d.fsm.Subscribe()
	defer stop()
	timeout := time.NewTimer(announcedWait)
	defer timeout.Stop()
	for !d.fsm.Holds(*id) {
		select {
		case <-changed:
		case <-timeout.C:
			d.log.Warn("answering from a plan state that does not hold the announced plan yet", zap.String("plan", *id))
			return
		}
	}
	d.announced.CompareAndSwap(id, nil)
}

// Republish implements control.Backend.
func (d *Daemon) Republish(ctx context.Context, env []byte) error {
	return d.coord.Republish(ctx, env)
}

// Approve implements control.Backend.
func (d *Daemon) Approve(ctx context.Context, env []byte) (*plan.Plan, error) {
	return d.coord.Approve(ctx, env)
}

// RepublishApproval implements control.Backend.
func (d *Daemon) RepublishApproval(ctx context.Context, env []byte) error {
	return d.coord.RepublishApproval(ctx, env)
}

// Changes implements control.Backend: the control socket's waits wake at
// each change of the plan state.
func (d *Daemon) Changes() (<-chan struct{}, func()) { return d.fsm.Subscribe() }

// Plan implements control.Backend.
func (d *Daemon) Plan(id string) control.PlanAnswer {
	d.awaitAnnounced()
	var ans control.PlanAnswer
	ans.Plan, ans.Rejected = d.fsm.Outcome(id)
	return ans
}
