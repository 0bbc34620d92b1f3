// Package chaos runs upgrades of real clusters (real upgraded daemons beside
// simulated IPFS Cluster peers on 127.0.0.1, through internal/harness) while
// injecting one fault at one phase of the plan, and checks what must hold
// whatever happens: every peer ends on one version, and no pin is lost.
//
// Faults are injected on real processes (SIGKILL of a daemon, of a peer, of
// the raft leader's daemon) or through test hooks switched on by a file, so
// that they can be healed at a chosen moment: a host cut off from the swarm
// (coordination/p2p IsolateFileEnv), a full disk while staging (sidecar/stage
// DiskFullFileEnv) and a peer too slow to start (clustersim
// SlowStartFileEnv).
package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/harness"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// Phase is the moment of a plan at which a fault is injected.
type Phase string

// Phases of the matrix, in plan order.
const (
	PhasePrepare  Phase = "prepare"  // a host is staging and backing up
	PhaseBarrier  Phase = "barrier"  // a host is prepared, waiting for the common switch
	PhaseStop     Phase = "stop"     // a host is stopping its peer
	PhaseSwap     Phase = "swap"     // a host is switching binaries
	PhaseStart    Phase = "start"    // a host started the new version
	PhaseVerify   Phase = "verify"   // a host's new peer answers and is being verified
	PhaseRollback Phase = "rollback" // the plan is rolling back (the target fails to start)
)

// Phases lists every phase of the matrix.
var Phases = []Phase{PhasePrepare, PhaseBarrier, PhaseStop, PhaseSwap, PhaseStart, PhaseVerify, PhaseRollback}

// Fault is what goes wrong.
type Fault string

// Faults of the matrix.
const (
	FaultDaemonKill Fault = "daemon-sigkill" // one daemon SIGKILLed, restarted later
	FaultPeerCrash  Fault = "peer-crash"     // one cluster peer SIGKILLed (its daemon's runner restarts it)
	FaultCutOff     Fault = "host-cut-off"   // one host refuses every swarm connection for a while
	FaultDiskFull   Fault = "disk-full"      // one host's staging writes fail with ENOSPC for a while
	FaultSlowPeer   Fault = "slow-peer"      // one host's peer starts slower than the verify deadline
	FaultLeaderLoss Fault = "leader-loss"    // the raft leader's daemon SIGKILLed, restarted later
)

// Faults lists every fault of the matrix.
var Faults = []Fault{FaultDaemonKill, FaultPeerCrash, FaultCutOff, FaultDiskFull, FaultSlowPeer, FaultLeaderLoss}

// Scenario is one fault at one phase.
type Scenario struct {
	Phase Phase
	Fault Fault
}

func (s Scenario) String() string { return string(s.Phase) + "/" + string(s.Fault) }

// Matrix is every phase crossed with every fault.
func Matrix() []Scenario {
	var out []Scenario
	for _, p := range Phases {
		for _, f := range Faults {
			out = append(out, Scenario{Phase: p, Fault: f})
		}
	}
	return out
}

// Env is what every scenario shares.
type Env struct {
	UpgradedBin string // the upgraded binary under test
	BuildDir    string // simulator builds, shared between scenarios
	Root        string // each scenario gets a folder under it
	From, To    string // versions: the cluster starts on From and is upgraded to To
	Pins        int    // pins added before the upgrade (default 10)
	// Hold is how long a fault lasts before it is healed (default 4s).
	Hold time.Duration
	// PlanTimeout bounds the wait for the plan to end (default 4 minutes).
	PlanTimeout time.Duration
}

func (e *Env) defaults() {
	if e.From == "" {
		e.From = "1.0.8"
	}
	if e.To == "" {
		e.To = "1.1.6"
	}
	if e.Pins <= 0 {
		e.Pins = 10
	}
	if e.Hold <= 0 {
		e.Hold = 4 * time.Second
	}
	if e.PlanTimeout <= 0 {
		e.PlanTimeout = 4 * time.Minute
	}
}

// Result is what one scenario ended with.
type Result struct {
	Scenario   Scenario
	Injected   string     // the step the victim was seen at when the fault hit, or why it never hit
	Outcome    plan.Phase // the plan's final phase ("" when it never ended)
	Reason     string     // the plan's reason for its outcome
	Versions   []string   // each peer's version at the end
	Pins       []int      // each peer's pin count at the end
	PinsBefore int
	Took       time.Duration
	Err        error // nil when every peer ended on one version with every pin
	Logs       []string
}

// Passed reports whether the invariants held.
func (r *Result) Passed() bool { return r.Err == nil }

// ErrSplitVersion and ErrLostPins are the invariants a scenario checks.
var (
	ErrSplitVersion = errors.New("peers ended on different versions")
	ErrLostPins     = errors.New("pins lost")
)

// Timeouts short enough for faults to resolve in seconds, as in internal/e2e.
func tune(c *config.Config) {
	c.Timeouts.Verify = 8 * time.Second
	c.Timeouts.Prepare = 60 * time.Second
	c.Timeouts.Switch = 60 * time.Second
	c.Timeouts.Rollback = 60 * time.Second
	c.Runner.StopTimeout = 5 * time.Second
}

// run is one scenario's cluster and its fault switches.
type run struct {
	env    Env
	c      *harness.Cluster
	faults string     // folder of the hook files
	envs   [][]string // each daemon's environment (hook variables)
}

// hookFile is the file that switches hook kind on for host i.
func (r *run) hookFile(kind string, i int) string {
	return filepath.Join(r.faults, fmt.Sprintf("%s-%d", kind, i))
}

// Build prepares the simulator builds every scenario uses, so that scenarios
// run side by side do not build the same thing at once.
func Build(ctx context.Context, env Env) error {
	env.defaults()
	for _, spec := range []simtest.BuildSpec{{Version: env.From}, {Version: env.To}, {Version: env.To, Fault: clustersim.FaultFailStart}} {
		if _, err := simtest.Build(ctx, env.BuildDir, spec); err != nil {
			return fmt.Errorf("building simulator %s %s: %w", spec.Version, spec.Fault, err)
		}
	}
	return nil
}

// Run plays scenario s on a fresh 3-peer cluster in a folder of env.Root.
func Run(ctx context.Context, env Env, s Scenario) *Result {
	env.defaults()
	start := time.Now()
	res := &Result{Scenario: s, PinsBefore: env.Pins}
	root := filepath.Join(env.Root, strings.ReplaceAll(s.String(), "/", "_"))
	c, err := harness.Setup(ctx, harness.Options{Root: root, Peers: 3, From: simtest.BuildSpec{Version: env.From},
		UpgradedBin: env.UpgradedBin, BuildDir: env.BuildDir, Tune: tune})
	if err != nil {
		res.Err = fmt.Errorf("setting up the cluster: %w", err)
		return res
	}
	r := &run{env: env, c: c, faults: filepath.Join(root, "faults")}
	defer func() {
		c.Close()
		if !res.Passed() {
			res.Logs = tails(c)
		}
		res.Took = time.Since(start)
	}()
	res.Err = r.play(ctx, s, res)
	return res
}

func (r *run) play(ctx context.Context, s Scenario, res *Result) error {
	c := r.c
	if err := os.MkdirAll(r.faults, 0o755); err != nil {
		return err
	}
	for i := range c.Hosts {
		r.envs = append(r.envs, []string{
			p2p.IsolateFileEnv + "=" + r.hookFile("cut", i),
			stage.DiskFullFileEnv + "=" + r.hookFile("diskfull", i),
			clustersim.SlowStartFileEnv + "=" + r.hookFile("slow", i),
		})
		if err := c.StartDaemonEnv(i, r.envs[i]); err != nil {
			return err
		}
	}
	if err := c.WaitRegistered(ctx); err != nil {
		return err
	}
	if _, err := c.AddPins(ctx, 0, r.env.Pins, "chaos"); err != nil {
		return fmt.Errorf("adding pins: %w", err)
	}
	if err := c.WaitPins(ctx, r.env.Pins); err != nil {
		return err
	}
	spec := simtest.BuildSpec{Version: r.env.To}
	if s.Phase == PhaseRollback {
		spec.Fault = clustersim.FaultFailStart // the only way to reach a rollback is a failing target
	}
	rel, err := c.Release(ctx, spec)
	if err != nil {
		return err
	}
	victim := 2
	victimID := c.HostID(ctx, victim)
	if victimID == "" {
		return errors.New("daemon 2 does not answer")
	}
	id, err := c.Announce(ctx, 0, rel)
	if err != nil {
		return fmt.Errorf("announcing: %w", err)
	}
	res.Injected, err = r.inject(ctx, s, id, victim, victimID)
	if err != nil {
		return err
	}
	p, err := r.waitEnd(ctx, id)
	if err != nil {
		return err
	}
	res.Outcome, res.Reason = p.Phase, p.Reason
	return r.check(ctx, p.Phase, res)
}

// inject waits for the victim to reach the scenario's phase, applies the
// fault, holds it, and heals it. It returns the step the fault hit at.
func (r *run) inject(ctx context.Context, s Scenario, id string, victim int, victimID string) (string, error) {
	seen, err := r.waitPhase(ctx, s.Phase, id, victimID, victim)
	if err != nil {
		return "", err
	}
	if seen == "" {
		return "not reached (plan ended first)", nil
	}
	if why := noEffect(s, seen); why != "" {
		seen += " [" + why + "]"
	}
	c := r.c
	switch s.Fault {
	case FaultDaemonKill, FaultLeaderLoss:
		if s.Fault == FaultLeaderLoss {
			if victim = r.leader(ctx); victim < 0 {
				return "", errors.New("no daemon names a raft leader")
			}
			seen += fmt.Sprintf(", leader daemon %d", victim)
		}
		if err := c.KillDaemon(ctx, victim, syscall.SIGKILL); err != nil {
			return "", err
		}
		if err := r.hold(ctx); err != nil {
			return "", err
		}
		if err := c.StartDaemonEnv(victim, r.envs[victim]); err != nil {
			return "", err
		}
	case FaultPeerCrash:
		if !killPeer(c.Hosts[victim].ConfigDir) {
			seen += ", no peer running"
		}
	case FaultCutOff, FaultDiskFull, FaultSlowPeer:
		kind, content, hold := "cut", "", r.env.Hold
		switch s.Fault {
		case FaultDiskFull:
			kind, content = "diskfull", "0" // no byte of an artifact can be written
		case FaultSlowPeer:
			// Any start of the peer while the fault holds is 12s slow, past
			// the 8s verify deadline; healed before a rollback's start.
			kind, content, hold = "slow", "12s", 6*time.Second
		}
		path := r.hookFile(kind, victim)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return "", err
		}
		herr := sleepCtx(ctx, hold)
		if err := os.Remove(path); err != nil {
			return "", err
		}
		if herr != nil {
			return "", herr
		}
	default:
		return "", fmt.Errorf("unknown fault %q", s.Fault)
	}
	return seen, nil
}

func (r *run) hold(ctx context.Context) error { return sleepCtx(ctx, r.env.Hold) }

// sleepCtx waits d: a fault's duration is the point, not a wait for a condition.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitPhase polls the daemons until the victim (or the plan) reaches phase.
// It returns the victim's step then, or "" when the plan ended first.
func (r *run) waitPhase(ctx context.Context, ph Phase, id, victimID string, victim int) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var seen string
	err := simtest.WaitFor(wctx, "the plan to reach "+string(ph), func() bool {
		p := r.plan(wctx, id)
		if p == nil {
			return false
		}
		h := p.Hosts[victimID]
		if h == nil {
			return false
		}
		if p.Phase.Terminal() {
			return true
		}
		if reached(ph, p.Phase, h.Step) && (ph != PhaseVerify || r.peerAnswers(wctx, victim, r.env.To)) {
			seen = fmt.Sprintf("%s (plan %s)", h.Step, p.Phase)
			return true
		}
		return false
	})
	return seen, err
}

// noEffect says why a fault injected at the victim step seen cannot change
// anything: a full disk matters only to staging, a slow start only to a peer
// that starts after it. Such scenarios still run (nothing may break), and the
// table says so rather than claim the fault was exercised.
func noEffect(s Scenario, seen string) string {
	step := plan.Step(strings.Fields(seen)[0])
	switch {
	case s.Fault == FaultDiskFull && stepIndex(step) > stepIndex(plan.StepPreparing):
		return "no effect: staging was over"
	case s.Fault == FaultSlowPeer && s.Phase != PhaseRollback && stepIndex(step) >= stepIndex(plan.StepStarting):
		return "no effect: the peer had started"
	}
	return ""
}

// reached decides whether a plan in phase pp, with the victim at step st,
// has reached phase ph.
func reached(ph Phase, pp plan.Phase, st plan.Step) bool {
	if ph == PhaseRollback {
		return pp == plan.PhaseRollingBack
	}
	want := map[Phase]plan.Step{PhasePrepare: plan.StepPreparing, PhaseBarrier: plan.StepPrepared,
		PhaseStop: plan.StepStopping, PhaseSwap: plan.StepSwapping, PhaseStart: plan.StepStarting,
		PhaseVerify: plan.StepStarting}[ph]
	return stepIndex(st) >= stepIndex(want)
}

var stepOrder = []plan.Step{plan.StepPending, plan.StepPreparing, plan.StepPrepared, plan.StepStopping,
	plan.StepSwapping, plan.StepStarting, plan.StepVerified}

// stepIndex orders the steps of a standard plan; any other step (failed,
// rolling back) is past them all.
func stepIndex(s plan.Step) int {
	for i, x := range stepOrder {
		if x == s {
			return i
		}
	}
	return len(stepOrder)
}

// plan returns plan id as the first answering daemon sees it.
func (r *run) plan(ctx context.Context, id string) *plan.Plan {
	for i := range r.c.Hosts {
		st, err := r.c.Status(ctx, i)
		if err == nil && st.Plan != nil && st.Plan.ID == id {
			return st.Plan
		}
	}
	return nil
}

// leader returns the index of the raft leader's daemon, or -1.
func (r *run) leader(ctx context.Context) int {
	for i := range r.c.Hosts {
		if st, err := r.c.Status(ctx, i); err == nil && st.Leader != "" {
			return r.c.IndexOf(ctx, st.Leader)
		}
	}
	return -1
}

// peerAnswers reports whether peer i answers its REST API with version.
func (r *run) peerAnswers(ctx context.Context, i int, version string) bool {
	code, body, err := simtest.Get(ctx, r.c.Peers[i].APIURL, "/version")
	if err != nil || code != 200 {
		return false
	}
	var v struct{ Version string }
	return json.Unmarshal(body, &v) == nil && v.Version == version
}

// waitEnd waits for plan id to end, asking every daemon in turn (any one of
// them may be down).
func (r *run) waitEnd(ctx context.Context, id string) (*plan.Plan, error) {
	wctx, cancel := context.WithTimeout(ctx, r.env.PlanTimeout)
	defer cancel()
	var last *plan.Plan
	err := simtest.WaitFor(wctx, "plan "+id+" to end", func() bool {
		last = r.plan(wctx, id)
		return last != nil && last.Phase.Terminal()
	})
	if err != nil {
		if last != nil {
			return nil, fmt.Errorf("plan stuck in %s: %w", last.Phase, err)
		}
		return nil, err
	}
	return last, nil
}

// check waits a little for the peers to settle after the plan's end, then
// requires every peer on the version the outcome implies, with every pin.
func (r *run) check(ctx context.Context, outcome plan.Phase, res *Result) error {
	want := r.env.From
	switch outcome {
	case plan.PhaseDone:
		want = r.env.To
	case plan.PhaseRolledBack, plan.PhaseFailed:
	default:
		want = "" // rollback-failed: any single version, with every pin
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var views []harness.PeerView
	_ = simtest.WaitFor(wctx, "the peers to settle", func() bool {
		views = r.c.Views(wctx)
		return verdict(views, want, res.PinsBefore) == nil
	})
	for _, v := range views {
		res.Versions = append(res.Versions, v.Version)
		res.Pins = append(res.Pins, v.Pins)
	}
	// rollback-failed hands the cluster to an operator; it fails the
	// scenario only through the invariant (a split or a lost pin), which is
	// what the matrix is about. The table shows the outcome either way.
	return verdict(views, want, res.PinsBefore)
}

// verdict is the invariant: one version (want, when known) on every peer and
// at least pins pins on each.
func verdict(views []harness.PeerView, want string, pins int) error {
	versions := map[string]bool{}
	for i, v := range views {
		if v.Err != nil {
			return fmt.Errorf("peer %d does not answer: %w", i, v.Err)
		}
		versions[v.Version] = true
		if v.Pins < pins {
			return fmt.Errorf("%w: peer %d holds %d of %d", ErrLostPins, i, v.Pins, pins)
		}
	}
	if len(versions) > 1 {
		return fmt.Errorf("%w: %v", ErrSplitVersion, versionsOf(views))
	}
	if want != "" && !versions[want] {
		return fmt.Errorf("peers on %v, want %s", versionsOf(views), want)
	}
	return nil
}

func versionsOf(views []harness.PeerView) []string {
	var out []string
	for _, v := range views {
		out = append(out, v.Version)
	}
	return out
}

// killPeer SIGKILLs the cluster peer named by a daemon's exec-runner
// pidfile; false when there was none to kill.
func killPeer(configDir string) bool {
	b, err := os.ReadFile(filepath.Join(configDir, "run", "ipfs-cluster-service.pid"))
	if err != nil {
		return false
	}
	var rec struct{ PID int }
	if json.Unmarshal(b, &rec) != nil || rec.PID <= 1 {
		return false
	}
	return syscall.Kill(rec.PID, syscall.SIGKILL) == nil
}

// tails returns the end of every daemon's log, for a failed scenario.
func tails(c *harness.Cluster) []string {
	var out []string
	for _, h := range c.Hosts {
		b, _ := os.ReadFile(h.LogPath)
		if len(b) > 8000 {
			b = b[len(b)-8000:]
		}
		out = append(out, fmt.Sprintf("---- daemon %d log (tail) ----\n%s", h.Index, b))
	}
	return out
}

// WriteTable prints one line per scenario and a summary.
func WriteTable(w io.Writer, rs []*Result) {
	fmt.Fprintf(w, "%-28s %-6s %-16s %-24s %-12s %-40s %s\n", "SCENARIO", "RESULT", "OUTCOME", "VERSIONS", "PINS", "INJECTED AT", "DETAIL")
	passed := 0
	for _, r := range rs {
		verdict := "FAIL"
		if r.Passed() {
			verdict = "ok"
			passed++
		}
		outcome := string(r.Outcome)
		if outcome == "" {
			outcome = "-"
		}
		detail := r.Reason
		if r.Err != nil {
			detail = r.Err.Error()
		}
		pins := make([]string, len(r.Pins))
		for i, p := range r.Pins {
			pins[i] = fmt.Sprint(p)
		}
		fmt.Fprintf(w, "%-28s %-6s %-16s %-24s %-12s %-40s %s (%s)\n", r.Scenario, verdict, outcome,
			strings.Join(r.Versions, ","), strings.Join(pins, ",")+fmt.Sprintf("/%d", r.PinsBefore), r.Injected,
			oneLine(detail, 120), r.Took.Round(time.Second))
	}
	fmt.Fprintf(w, "%d scenarios run, %d passed, %d failed\n", len(rs), passed, len(rs)-passed)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
