// Package agent is the host's side of a plan: it watches the replicated plan
// state and carries out this host's steps (prepare, switch, verify, rollback),
// journaling each one before and after, and reports its progress.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/sidecar/stage"
	"github.com/upgraded/upgraded/statebackup"
)

// Reporter delivers this host's progress to the replicated plan.
type Reporter interface {
	// Report hands over the latest progress of a plan without blocking; the
	// latest report per plan is delivered, retried until accepted or the plan ends.
	Report(planID string, p plan.HostProgress)
}

// PlanSource is the replicated plan state (coordination/plan.FSM).
type PlanSource interface {
	Plan(id string) *plan.Plan
	// Latest is the plan in progress, else the most recent one, else nil.
	Latest() *plan.Plan
	// View calls fn with the state, which fn must only read and not keep.
	View(fn func(s *plan.State))
	Subscribe() (<-chan struct{}, func())
}

// Config wires an Agent. Every field is required unless said otherwise.
type Config struct {
	HostID     string // this daemon's peer ID, its key in plans
	ClusterDir string // the IPFS Cluster peer's config folder
	Runner     sidecar.Runner
	API        *cluster.Client
	Bins       *binstore.Store
	Backups    *statebackup.Store
	Journal    *Journal
	StagingDir string
	Reporter   Reporter
	Plans      PlanSource
	Log        *zap.Logger
	// VerifyTimeout bounds how long a started peer has to prove itself healthy.
	VerifyTimeout time.Duration
	// PollInterval is how often health is polled while verifying (default 200ms).
	PollInterval time.Duration
	FetchOptions []stage.Option
	BinaryEnv    []string // environment for ipfs-cluster-service invocations
	// Images, when set (docker mode), stages the plan's image artifact in
	// place of fetching and unpacking files (images.go).
	Images ImageStager
	// HoldPeer, when set, may keep the peer stopped at start-up: something
	// else (a recovery) stopped it on purpose and will start it. It says why.
	HoldPeer func() (why string, hold bool)
	// Artifacts, when set, fetches the plan's artifacts in place of
	// stage.Fetch with FetchOptions (artifacts.go).
	Artifacts ArtifactFetcher
}

// Agent carries out this host's part of every plan, one task at a time.
type Agent struct {
	cfg Config
	log *zap.Logger

	mu   sync.Mutex
	last map[string]plan.HostProgress // latest progress reported, per plan
}

// New validates cfg and returns an agent.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.HostID == "", cfg.ClusterDir == "":
		return nil, errors.New("agent: host id and cluster folder are required")
	case cfg.Runner == nil, cfg.API == nil, cfg.Bins == nil, cfg.Backups == nil, cfg.Journal == nil,
		cfg.Reporter == nil, cfg.Plans == nil, cfg.Log == nil:
		return nil, errors.New("agent: runner, api, binstore, backups, journal, reporter, plans and logger are required")
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 2 * time.Minute
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	return &Agent{cfg: cfg, log: cfg.Log.Named("agent"), last: map[string]plan.HostProgress{}}, nil
}

type action int

const (
	actNone action = iota
	actPrepare
	actSwitch
	actRollback
	actCleanup
	actRemove
	actRejoin
)

func (a action) String() string {
	return [...]string{"none", "prepare", "switch", "rollback", "cleanup", "remove", "rejoin"}[a]
}

// decide is the whole policy of the host: given the plan and this host's
// journal, what to do next. Tasks are idempotent by journal, so deciding the
// same action twice (after a restart, or before a report landed) is safe.
func decide(p *plan.Plan, me string, j *Entries) action {
	if p == nil {
		return actNone
	}
	hp, ok := p.Hosts[me]
	if !ok {
		return actNone
	}
	switch p.Phase {
	case plan.PhaseProposed, plan.PhaseScheduled: // waiting for approvals or for its start: nothing to do yet
		return actNone
	case plan.PhasePreparing:
		if p.Paused && hp.Step == plan.StepPending { // paused: nothing new starts
			return actNone
		}
		if hp.Step == plan.StepPending || hp.Step == plan.StepPreparing {
			return actPrepare
		}
	case plan.PhaseSwitching:
		if p.Arming() { // the leader sets the switch time once every daemon holds the plan
			return actNone
		}
		switch p.Proc() {
		case plan.Bootstrap:
			return decideBootstrap(p.Tasks[me], hp.Step)
		case plan.Rolling: // only the hosts of the current batch switch
			if p.Tasks[me] != plan.TaskUpgrade {
				return actNone
			}
		}
		switch hp.Step {
		case plan.StepPrepared, plan.StepStopping, plan.StepSwapping, plan.StepStarting:
			return actSwitch
		}
	case plan.PhaseRollingBack:
		if p.Proc() == plan.Bootstrap && p.Survivor != "" && p.Tasks[me] != plan.TaskRestore && p.Tasks[me] != plan.TaskRejoinOld {
			return actNone // the sequence has not reached this host yet
		}
		if hp.Step != plan.StepRolledBack && hp.Step != plan.StepRollbackErr {
			return actRollback
		}
	default: // ended
		if !j.Done(jCleanup) {
			return actCleanup
		}
	}
	return actNone
}

// decideBootstrap is the host's policy within the bootstrap sequence: act
// only on the task the plan gives it, from the steps that task starts from.
func decideBootstrap(task plan.Task, step plan.Step) action {
	switch task {
	case plan.TaskRemove:
		if step == plan.StepPrepared || step == plan.StepRemoving {
			return actRemove
		}
	case plan.TaskUpgrade:
		switch step {
		case plan.StepPrepared, plan.StepStopping, plan.StepSwapping, plan.StepStarting:
			return actSwitch
		}
	case plan.TaskRejoin:
		if step == plan.StepRemoved || step == plan.StepRejoining {
			return actRejoin
		}
	}
	return actNone
}

// Run carries out plans until ctx ends. Before taking any plan it settles what
// a previous run left half done.
func (a *Agent) Run(ctx context.Context) error {
	changes, cancel := a.cfg.Plans.Subscribe()
	defer cancel()
	if err := a.startup(ctx); err != nil {
		a.log.Error("checking the peer at start-up", zap.Error(err))
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		running bool
		done    = make(chan taskResult, 1)
		failed  taskResult // the last task that failed, not retried before retryAfter
		ended   taskResult // the last task that ended well, see again
		wg      sync.WaitGroup
	)
	defer wg.Wait()
	for {
		if !running {
			p, act := a.next()
			key := a.keyOf(p, act)
			retryTooSoon := failed.err != nil && p != nil && failed.plan == p.ID && failed.act == act && time.Since(failed.at) < retryAfter
			again := ended.taskKey == key && time.Since(ended.at) < retryAfter
			if act != actNone && !retryTooSoon && !again {
				running = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					done <- taskResult{taskKey: key, err: a.runTask(ctx, p, act), at: time.Now()}
				}()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case r := <-done:
			running = false
			if r.err != nil {
				failed = r
			} else {
				ended = r
			}
		case <-changes:
		case <-tick.C:
		}
	}
}

// retryAfter is how long a failed task waits before it is tried again while
// the plan still calls for it (its failure report may not have landed yet):
// no tight loop when a new version keeps failing to start. A task that ended
// well is not run again from the same plan state before it either: the state
// shows what the task did only once its report reaches the leader, and until
// then the plan calls for the same task, which would find its work done in
// the journal, report again and end, over and over. At N=50 that loop took
// 10% of every daemon's CPU in the outage and flooded the leader with
// repeated reports. The coordinator retries the report until it lands.
const retryAfter = 2 * time.Second

// taskKey is what a task was decided from.
type taskKey struct {
	plan  string
	act   action
	phase plan.Phase
	step  plan.Step // this host's
	task  plan.Task // this host's, in a bootstrap plan
	pause bool
}

func (a *Agent) keyOf(p *plan.Plan, act action) taskKey {
	if p == nil {
		return taskKey{}
	}
	k := taskKey{plan: p.ID, act: act, phase: p.Phase, task: p.Tasks[a.cfg.HostID], pause: p.Paused}
	if h, ok := p.Hosts[a.cfg.HostID]; ok {
		k.step = h.Step
	}
	return k
}

type taskResult struct {
	taskKey
	err error
	at  time.Time
}

// next returns the plan to work on and the action it calls for.
func (a *Agent) next() (*plan.Plan, action) {
	p := a.cfg.Plans.Latest()
	if p == nil {
		return nil, actNone
	}
	j, err := a.cfg.Journal.Load(p.ID)
	if err != nil {
		a.log.Error("reading the journal", zap.String("plan", p.ID), zap.Error(err))
		return nil, actNone
	}
	return p, decide(p, a.cfg.HostID, j)
}

func (a *Agent) runTask(ctx context.Context, p *plan.Plan, act action) error {
	log := a.log.With(zap.String("plan", p.ID), zap.String("task", act.String()))
	log.Debug("taking task")
	var err error
	switch act {
	case actPrepare:
		err = a.prepare(ctx, p)
	case actSwitch:
		err = a.switchOver(ctx, p)
	case actRollback:
		err = a.rollback(ctx, p)
	case actCleanup:
		err = a.cleanup(ctx, p)
	case actRemove:
		err = a.remove(ctx, p)
	case actRejoin:
		err = a.rejoin(ctx, p)
	}
	if err != nil && ctx.Err() == nil {
		log.Error("task failed", zap.Error(err))
	}
	return err
}

// startup leaves the peer stopped only when a journal says this host stopped
// it for a plan that is not settled; otherwise it makes sure the peer runs.
func (a *Agent) startup(ctx context.Context) error {
	ids, err := a.cfg.Journal.Plans()
	if err != nil {
		return err
	}
	for _, id := range ids {
		j, err := a.cfg.Journal.Load(id)
		if err != nil {
			return err
		}
		if (j.Begun(jStop) || j.Begun(jRemove)) && !j.Done(jVerify) && !j.Done(jRejoin) && !j.Done(jRollback) && !j.Done(jCleanup) {
			a.log.Warn("a previous run stopped the peer for a plan that is not settled; waiting for the cluster's plan state before touching it",
				zap.String("plan", id))
			return nil
		}
	}
	if a.cfg.HoldPeer != nil {
		if why, hold := a.cfg.HoldPeer(); hold {
			a.log.Warn("the peer is left stopped at start-up", zap.String("why", why))
			return nil
		}
	}
	return a.ensureRunning(ctx)
}

func (a *Agent) ensureRunning(ctx context.Context) error {
	st, err := a.cfg.Runner.Status(ctx)
	if err != nil {
		return fmt.Errorf("asking whether the peer runs: %w", err)
	}
	if st.Running {
		return nil
	}
	a.log.Info("starting the cluster peer")
	if err := a.cfg.Runner.Start(ctx, sidecar.StartOptions{}); err != nil {
		return fmt.Errorf("starting the cluster peer: %w", err)
	}
	return nil
}

// report records and sends this host's progress.
func (a *Agent) report(planID string, mutate func(p *plan.HostProgress)) {
	a.mu.Lock()
	hp := a.last[planID]
	mutate(&hp)
	a.last[planID] = hp
	a.mu.Unlock()
	a.cfg.Reporter.Report(planID, hp)
}

func (a *Agent) fail(planID string, step plan.Step, err error) error {
	a.report(planID, func(p *plan.HostProgress) {
		p.Step, p.Error, p.Detail = step, err.Error(), ""
	})
	return err
}

func (a *Agent) stagingDir(planID string) string {
	return filepath.Join(a.cfg.StagingDir, planID)
}

// currentVersion asks the running peer, or falls back to the installed binary.
func (a *Agent) currentVersion(ctx context.Context) (string, error) {
	if v, err := a.cfg.API.Version(ctx); err == nil && v != "" {
		return v, nil
	}
	return a.cfg.Bins.Current()
}

func (a *Agent) cleanup(ctx context.Context, p *plan.Plan) error {
	if err := a.ensureRunning(ctx); err != nil {
		return err
	}
	a.log.Info("plan ended", zap.String("plan", p.ID), zap.String("phase", string(p.Phase)), zap.String("reason", p.Reason))
	if j, err := a.cfg.Journal.Load(p.ID); err == nil {
		a.exportStoppedState(ctx, p, j)
	}
	if err := os.RemoveAll(a.stagingDir(p.ID)); err != nil {
		return fmt.Errorf("removing staged files of plan %s: %w", p.ID, err)
	}
	return a.cfg.Journal.Done(p.ID, jCleanup, nil)
}
