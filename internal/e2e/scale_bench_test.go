package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/harness"
	"github.com/upgraded/upgraded/sidecar/cluster"
)

// scaleNsEnv lists the cluster sizes BenchmarkScale runs (make bench BENCH_N=3,10).
const scaleNsEnv = "UPGRADED_BENCH_N"

// scaleKeepEnv names a folder where each size's work folder (daemon logs,
// journals) is kept instead of a temporary one.
const scaleKeepEnv = "UPGRADED_BENCH_KEEP"

// scalePins is the pinset every peer holds; kept small so that the figures
// show coordination, not pinset transfer.
const scalePins = 50

// scaleResult is what one cluster size measured.
type scaleResult struct {
	N            int
	Plan         *plan.Plan
	AnnounceToOK time.Duration // announce CLI start to its answer: the plan is in the raft state
	// AnnounceDaemon is the announcing daemon's part of AnnounceToOK: its
	// control request to the plan in its raft state (its log). The rest is
	// the CLI process starting, which on a machine saturated by N simulated
	// peers waits for a CPU (an idle N=100 here runs 'upgraded status' in
	// 0.1 to 2.4 s).
	AnnounceDaemon time.Duration
	// AnnounceSteps splits AnnounceToOK from the daemons' logs: the CLI
	// before the daemon took the request, the leader's raft commit, and the
	// CLI after the daemon answered.
	AnnounceSteps string
	Prepare       time.Duration // plan committed to every host prepared and the switch armed (leader's raft times)
	Skew          time.Duration // last stop minus first stop (journals)
	Downtime      time.Duration // first stop to last peer verified (journals)
	Settled       time.Duration // first stop to the plan done in the raft state
	Plain         time.Duration // the plain script: first stop to last peer healthy
	PlainSkew     time.Duration
	// Meshed is how long after setup every daemon was connected to every
	// other, which is when idle memory is read; Fewest is the fewest
	// connections a daemon had when the wait for it gave up (N-1: meshed).
	Meshed       time.Duration
	Fewest       int
	RSSIdle      []int64 // VmRSS of each daemon before the announcement, kB
	AnonIdle     []int64 // RssAnon of the same: VmRSS less the binary's pages, shared by all daemons
	RSSPeak      []int64 // VmHWM of each daemon during the upgrade, kB (0: unknown)
	SourceBytes  int64   // bytes the artifact server sent during the upgrade
	ArtifactSize int64   // bytes of one full set of artifacts
	Steps        string  // median and max of each switch step across hosts (journals)
	// OutageCPU is the CPU the daemons and the machine used from the first
	// stop to the last verification. On one machine the daemons' share is
	// taken from the peers restarting beside them, which hosts of their own
	// would not lose; the plain script runs without daemons.
	OutageCPU *cpuShare
	// IdleCPU is the same over the benchIdleWindow before the announcement: what
	// the daemons and the simulated peers cost the machine with no plan.
	IdleCPU *cpuShare
	// PlainCPU is the same over the plain script's outage, its "daemons"
	// being this process, which runs the script's health polls.
	PlainCPU   *cpuShare
	PlainSteps string // the plain script's steps, as Steps
	Root       string // the hosts' folder, removed when the run returns
	Failed     string // where the run stopped, when it did not finish
}

// benchIdleWindow is how long the CPU is sampled, nothing happening, before
// the announcement: $UPGRADED_BENCH_IDLE (a duration), default 5s.
func benchIdleWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("UPGRADED_BENCH_IDLE")); err == nil && d > 0 {
		return d
	}
	return 5 * time.Second
}

// BenchmarkScale runs, for each N of $UPGRADED_BENCH_N (default 3,10,50,100),
// N simulated peers each with a real daemon process, announces a standard
// upgrade 1.0.8 -> 1.1.6 with the release served over HTTP, then runs a plain
// stop-swap-start script on the same peers, and prints one row per N.
func BenchmarkScale(b *testing.B) {
	ns, err := scaleNs(os.Getenv(scaleNsEnv))
	if err != nil {
		b.Fatal(err)
	}
	runs, err := scaleRuns(os.Getenv(scaleRunsEnv))
	if err != nil {
		b.Fatal(err)
	}
	var rows, summaries []string
	var ratios []float64
	for _, n := range ns {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for i := 0; i < b.N*runs; i++ {
				r, err := runScale(b, n)
				if r != nil { // what was measured before a failure is printed too
					rows = append(rows, r.row())
					fmt.Printf("\n%s\n%s\n      %s\n%s\n%s\n      %s\n      CPU during the outage: %s\n      CPU during the plain script's outage: %s\n      CPU idle, before the announcement: %s\n",
						scaleHeader, r.row(), r.AnnounceSteps, r.Steps, r.PlainSteps, r.mesh(), r.OutageCPU, r.PlainCPU.of("its health polls (this process)"), r.IdleCPU)
				}
				if err != nil {
					b.Fatal(err)
				}
				reportScale(b, r)
				ratios = append(ratios, r.ratio())
			}
			if len(ratios) > 1 {
				sum := ratioSummary(n, ratios)
				summaries = append(summaries, sum)
				fmt.Printf("\n%s\n", sum)
				b.ReportMetric(medianFloat(ratios), "ratio-median")
			}
			ratios = ratios[:0]
		})
	}
	fmt.Printf("\nscale (every figure an upper bound: the machine is shared; hosts' folders in %s)\n%s\n%s\n",
		scaleDirDescription(), scaleHeader, strings.Join(rows, "\n"))
	if len(summaries) > 0 {
		fmt.Println(strings.Join(summaries, "\n"))
	}
}

// scaleRunsEnv is how many times each size runs (make bench BENCH_RUNS=5):
// on a shared machine one run's downtime ratio can be off by a third, as
// busy as the machine happens to be in either outage, so a target is read
// from the median of several.
const scaleRunsEnv = "UPGRADED_BENCH_RUNS"

func scaleRuns(s string) (int, error) {
	if s == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a count of runs, at least 1", scaleRunsEnv, s)
	}
	return n, nil
}

// ratioSummary gives the median, the spread and every value of one size's
// downtime ratios, in the order run.
func ratioSummary(n int, ratios []float64) string {
	vals := make([]string, len(ratios))
	for i, r := range ratios {
		vals[i] = fmt.Sprintf("%.2f", r)
	}
	s := slices.Clone(ratios)
	slices.Sort(s)
	return fmt.Sprintf("N=%d, %d runs: downtime/plain script median %.2f (min %.2f, max %.2f): %s",
		n, len(ratios), medianFloat(ratios), s[0], s[len(s)-1], strings.Join(vals, " "))
}

// medianFloat is the middle value of v (the mean of the two middle ones for an even count).
func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestScaleHarnessSmoke runs the scale harness once at N=3: the upgrade must
// succeed and every figure be produced. Timings are not asserted.
func TestScaleHarnessSmoke(t *testing.T) {
	r, err := runScale(t, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s\n%s", scaleHeader, r.row())
	if !r.Plan.Succeeded() {
		t.Fatalf("plan ended %s: %s", r.Plan.Phase, r.Plan.Reason)
	}
	for name, d := range map[string]time.Duration{"announce to commit": r.AnnounceToOK,
		"announce to commit in the daemon": r.AnnounceDaemon, "prepare": r.Prepare,
		"downtime": r.Downtime, "plan done": r.Settled, "plain downtime": r.Plain} {
		if d <= 0 {
			t.Errorf("%s not measured (%s)", name, d)
		}
	}
	if r.Fewest != 2 {
		t.Errorf("the 3 daemons never all reported connections to the 2 others: %s", r.mesh())
	}
	if len(r.RSSIdle) != 3 || r.RSSIdle[0] <= 0 {
		t.Errorf("idle memory not measured: %v", r.RSSIdle)
	}
	if r.OutageCPU == nil || r.OutageCPU.Machine <= 0 {
		t.Errorf("CPU during the outage not measured: %v", r.OutageCPU)
	}
	if r.SourceBytes < r.ArtifactSize || r.ArtifactSize <= 0 {
		t.Errorf("artifact server sent %d bytes for an artifact set of %d", r.SourceBytes, r.ArtifactSize)
	}
	if _, err := os.Stat(r.Root); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the hosts' folder %s is still there after the run (%v): runs would pile up staged releases", r.Root, err)
	}
	for _, want := range []string{"stop ", "state copy ", "swap+migrate ", "start ", "verify ", "last peer started "} {
		if !strings.Contains(r.Steps, want) {
			t.Errorf("switch steps lack %q: %s", want, r.Steps)
		}
	}
	for _, want := range []string{"stop ", "start ", "verify ", "last peer started "} {
		if !strings.Contains(r.PlainSteps, want) {
			t.Errorf("plain script's steps lack %q: %s", want, r.PlainSteps)
		}
	}
}

func TestScaleRunsAndRatioSummary(t *testing.T) {
	for in, want := range map[string]int{"": 1, "1": 1, "5": 5} {
		if got, err := scaleRuns(in); err != nil || got != want {
			t.Errorf("scaleRuns(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-2", "x"} {
		if _, err := scaleRuns(in); err == nil {
			t.Errorf("scaleRuns(%q) accepted", in)
		}
	}
	if got := medianFloat([]float64{1.4, 1.0, 1.2}); got != 1.2 {
		t.Errorf("median of 3 = %v", got)
	}
	if got := medianFloat([]float64{1.4, 1.0, 1.2, 1.1}); got < 1.1499 || got > 1.1501 {
		t.Errorf("median of 4 = %v", got)
	}
	const want = "N=50, 3 runs: downtime/plain script median 1.20 (min 1.00, max 1.40): 1.40 1.00 1.20"
	if got := ratioSummary(50, []float64{1.4, 1.0, 1.2}); got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
}

func scaleNs(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		s = "3,10,50,100"
	}
	var ns []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%q: want cluster sizes like 3,10,50", scaleNsEnv, s)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// scaleDirEnv names the folder where the hosts' folders are made (default:
// a folder in /dev/shm where it can be written, else a temporary one).
const scaleDirEnv = "UPGRADED_BENCH_DIR"

// scaleRoot is where one size's hosts live. Every simulated host would have a
// disk of its own; here they share one, on which an fsync takes ~14 ms under
// load and 50 hosts' journal, backup and state fsyncs queue behind each other
// (the N=50 run on the disk: state copy 1.2 s and swap 0.7 s median, for a
// few kB). tmpfs stands for 50 disks that do not wait for each other; it
// makes fsync free, so the figures are optimistic by the hosts' own fsyncs
// (~10 in the outage, about 1 ms each on an SSD). Set UPGRADED_BENCH_DIR to
// measure on a disk.
//
// The folder is removed by the returned func, which runScale defers: a
// size's folders hold its staged releases (~3 GB at N=50, in memory on
// /dev/shm), and BENCH_RUNS=7 left seven of them there until the benchmark
// ended, 20 GB of a 24 GB machine by the sixth run.
func scaleRoot() (root string, remove func(), err error) {
	base := os.Getenv(scaleDirEnv)
	if base == "" {
		if root, err := os.MkdirTemp("/dev/shm", "upgraded-bench-"); err == nil {
			return root, func() { os.RemoveAll(root) }, nil
		}
		base = os.TempDir()
	}
	root, err = os.MkdirTemp(base, "upgraded-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("making the hosts' folder in %s: %w", base, err)
	}
	return root, func() { os.RemoveAll(root) }, nil
}

func scaleDirDescription() string {
	if d := os.Getenv(scaleDirEnv); d != "" {
		return d
	}
	if _, err := os.Stat("/dev/shm"); err == nil {
		return "/dev/shm (tmpfs)"
	}
	return os.TempDir()
}

// meshWait bounds the wait for every daemon to connect to every other
// before idle memory is read; past it, memory is read anyway and the row
// says how far the mesh got.
const meshWait = 4 * time.Minute

// scaleTimeouts are generous: at N=100 on a shared 2-core machine everything is slow.
func scaleTimeouts(c *config.Config) {
	c.Timeouts.Verify = 2 * time.Minute
	c.Timeouts.Prepare = 10 * time.Minute // N=100 hosts stage a release each on 2 cores
	c.Timeouts.Switch = 5 * time.Minute
	c.Timeouts.Rollback = 5 * time.Minute
	c.Runner.StopTimeout = 10 * time.Second
	// Up to 200 processes share 2 cores here: a daemon may not be scheduled
	// for over a second, which raft's LAN default reads as a dead leader.
	c.Raft.HeartbeatTimeout = 3 * time.Second
}

// runScale measures one cluster size; everything it started is stopped when
// it returns. After a failure it returns what it measured, with Failed set.
func runScale(tb testing.TB, n int) (r *scaleResult, err error) {
	r = &scaleResult{N: n}
	defer func() {
		if err != nil {
			r.Failed = err.Error()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute+time.Duration(n)*9*time.Second)
	defer cancel()
	root, remove, err := scaleRoot()
	if err != nil {
		return r, err
	}
	r.Root = root
	defer remove() // after the cluster's deferred Close: nothing runs in it any more
	if keep := os.Getenv(scaleKeepEnv); keep != "" {
		// Kept for reading the daemons' logs after a failed size.
		root = filepath.Join(keep, fmt.Sprintf("N%d-%d", n, time.Now().Unix()))
		if err := os.MkdirAll(root, 0o755); err != nil {
			return r, err
		}
	}
	c, err := harness.Setup(ctx, harness.Options{Root: root, Peers: n, From: simtest.BuildSpec{Version: "1.0.8"},
		UpgradedBin: upgradedBin, BuildDir: buildDir, Tune: scaleTimeouts})
	if err != nil {
		return r, fmt.Errorf("setting up %d hosts: %w", n, err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	if err := c.Start(ctx); err != nil {
		return r, fmt.Errorf("starting %d hosts: %w", n, err)
	}
	if _, err := c.AddPins(ctx, 0, scalePins, "scale"); err != nil {
		return r, err
	}
	if err := c.WaitPins(ctx, scalePins); err != nil {
		return r, err
	}
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		return r, err
	}
	srv, err := serveArtifacts(rel)
	if err != nil {
		return r, err
	}
	defer srv.Close()
	r.ArtifactSize = srv.size
	pids := make([]int, n)
	for i := range pids {
		pids[i] = c.PID(i)
	}
	// Idle memory is that of the whole mesh: each connection costs a daemon
	// goroutines and buffers, and at N=100 the last ones are made minutes
	// after every daemon registered.
	meshFrom := time.Now()
	mctx, mcancel := context.WithTimeout(ctx, meshWait)
	r.Fewest, err = c.WaitMeshed(mctx)
	mcancel()
	r.Meshed = time.Since(meshFrom)
	if err != nil && ctx.Err() != nil {
		return r, err
	}
	if r.RSSIdle, err = procStatus(pids, "VmRSS"); err != nil {
		return r, err
	}
	if r.AnonIdle, err = procStatus(pids, "RssAnon"); err != nil {
		return r, err
	}
	peakKnown := resetPeaks(pids)
	stopSampling := cpuSampler(pids)
	samplesTaken := false
	defer func() {
		if !samplesTaken {
			stopSampling()
		}
	}()
	idleFrom := time.Now()
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(benchIdleWindow()):
	}
	start := time.Now()
	id, err := c.Announce(ctx, 0, srv.args, "--procedure", "standard")
	if err != nil {
		return r, err
	}
	end := time.Now()
	r.AnnounceToOK = end.Sub(start)
	answered, err := announceAnswered(c.Hosts[0].LogPath, id)
	if err != nil {
		return r, err
	}
	r.AnnounceDaemon = answered.took
	r.AnnounceSteps = announceSteps(c, id, start, end, answered)
	// Every status answer costs daemon 0 CPU in the outage it measures (8% of
	// the daemons' CPU when asked every 50 ms at N=50); the times measured
	// come from the plan state and the journals, not from when this asks.
	r.Plan, err = c.WaitPlanEvery(ctx, 0, id, time.Second)
	if peakKnown {
		r.RSSPeak, _ = procStatus(pids, "VmHWM")
	}
	r.SourceBytes = srv.sent.Load()
	if err != nil {
		return r, fmt.Errorf("%w; last seen: %s", err, planSummary(r.Plan))
	}
	r.Steps = switchSteps(c, id, r.Plan.SwitchAt)
	if !r.Plan.Succeeded() {
		return r, fmt.Errorf("plan %s ended %s: %s", id, r.Plan.Phase, r.Plan.Reason)
	}
	r.Prepare = r.Plan.SwitchAt.Add(-r.Plan.Timeouts.Barrier).Sub(r.Plan.Created)
	firstStop, down, skew, err := journalTimes(c, id)
	if err != nil {
		return r, err
	}
	r.Downtime, r.Skew = down, skew
	samplesTaken = true
	samples := stopSampling()
	r.OutageCPU = shareBetween(samples, firstStop, firstStop.Add(down))
	r.IdleCPU = shareBetween(samples, idleFrom, start)
	// The plan is done when the raft state holds every host's verification:
	// how long after the last host verified is how late progress reaches it.
	r.Settled = r.Plan.Since.Sub(firstStop)
	closed = true
	c.Close() // daemons stop their peers
	plain, err := parallelScript(ctx, c, scalePins)
	r.Plain, r.PlainSkew, r.PlainCPU, r.PlainSteps = plain.Down, plain.Skew, plain.CPU, plain.Steps
	return r, err
}

// parallelScript is an operator's script run on every host at once (as over
// parallel ssh): stop the peer, swap, start it, poll it every 200 ms until
// healthy (version, full pinset, every peer seen), as the agent verifies.
// The peers already run 1.1.6, so the swap is a no-op: what it measures is the
// stop-start cycle and the time to health.
func parallelScript(ctx context.Context, c *harness.Cluster, pins int) (r plainRun, err error) {
	bin, err := simtest.Build(ctx, c.BuildDir, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		return r, err
	}
	n := len(c.Peers)
	procs := make([]*simtest.Process, n)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, p := range procs {
			if p != nil {
				_ = p.Stop(sctx)
			}
		}
	}()
	for i, p := range c.Peers {
		if procs[i], err = simtest.Start(bin.Service, p, nil); err != nil {
			return r, err
		}
	}
	if err := c.WaitHealthy(ctx, "1.1.6", pins); err != nil {
		return r, err
	}
	stopSampling := cpuSampler([]int{os.Getpid()})
	stops, stopped, started, healthy := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, p := range c.Peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stops[i] = time.Now()
			if err := procs[i].Stop(ctx); err != nil && !isExit(err) {
				errs[i] = fmt.Errorf("stopping peer %d: %w", i, err)
				return
			}
			stopped[i] = time.Now()
			if procs[i], errs[i] = simtest.Start(bin.Service, p, nil); errs[i] != nil {
				return
			}
			started[i] = time.Now()
			healthy[i], errs[i] = pollHealthy(ctx, p, "1.1.6", pins, n)
		}()
	}
	wg.Wait()
	samples := stopSampling()
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	first, lastStop, lastHealthy := stops[0], stops[0], healthy[0]
	for i := range stops {
		first, lastStop, lastHealthy = minTime(first, stops[i]), maxTime(lastStop, stops[i]), maxTime(lastHealthy, healthy[i])
	}
	var st stepTimes
	for i := range stops {
		st.add("stop", stopped[i].Sub(stops[i]))
		st.add("start", started[i].Sub(stopped[i]))
		st.add("verify", healthy[i].Sub(started[i]))
		st.started(first, started[i])
	}
	r = plainRun{Down: lastHealthy.Sub(first), Skew: lastStop.Sub(first), CPU: shareBetween(samples, first, lastHealthy),
		Steps: "      plain script's steps, " + st.String()}
	return r, nil
}

// plainRun is what the plain script measured.
type plainRun struct {
	Down  time.Duration // first stop to last peer healthy
	Skew  time.Duration // last stop minus first stop
	CPU   *cpuShare     // over Down
	Steps string        // median and max of each step across hosts
}

// stepTimes collects, per step, each host's time, and when the last host
// started its peer: once it has, the peers' time to health is the
// simulated cluster's own, so the difference between the two ways of
// restarting is mostly in how late the last peer starts.
type stepTimes struct {
	names     []string
	took      map[string][]int64
	lastStart time.Duration
}

func (s *stepTimes) add(name string, d time.Duration) {
	if s.took == nil {
		s.took = map[string][]int64{}
	}
	if _, ok := s.took[name]; !ok {
		s.names = append(s.names, name)
	}
	s.took[name] = append(s.took[name], d.Milliseconds())
}

// started records that a host's peer was started at, the first stop being first.
func (s *stepTimes) started(first, at time.Time) {
	if !at.IsZero() {
		s.lastStart = max(s.lastStart, at.Sub(first))
	}
}

func (s *stepTimes) String() string {
	parts := make([]string, 0, len(s.names))
	for _, name := range s.names {
		v := s.took[name]
		sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
		parts = append(parts, fmt.Sprintf("%s %d/%d", name, median(v), v[len(v)-1]))
	}
	return fmt.Sprintf("ms median/max across hosts: %s; last peer started %dms after the first stop",
		strings.Join(parts, ", "), s.lastStart.Milliseconds())
}

// planSummary says where a plan stands: its phase and how many hosts are at each step.
func planSummary(p *plan.Plan) string {
	if p == nil {
		return "no plan"
	}
	steps := map[plan.Step]int{}
	for _, h := range p.Hosts {
		steps[h.Step]++
	}
	var parts []string
	for s, k := range steps {
		parts = append(parts, fmt.Sprintf("%d %s", k, s))
	}
	sort.Strings(parts)
	return fmt.Sprintf("plan %s (%s)", p.Phase, strings.Join(parts, ", "))
}

// switchSteps reads every host's journal of plan id and gives, per step of
// the switch, the median and the longest time across hosts; "late" is how long
// after the plan's switch time a host began to stop its peer.
func switchSteps(c *harness.Cluster, id string, switchAt time.Time) string {
	// Each step runs from the record named before it to the record named after.
	spans := []struct{ name, from, to string }{
		{"stop", "stop/begin", "stop/done"}, {"state copy", "stop/done", "backup-offline/done"},
		{"swap+migrate", "backup-offline/done", "migrate/done"}, {"start", "migrate/done", "start/done"},
		{"verify", "start/done", "verify/done"},
	}
	var st stepTimes
	var late []int64
	hosts := make([]map[string]time.Time, 0, len(c.Hosts))
	var first time.Time
	for _, h := range c.Hosts {
		at := map[string]time.Time{}
		f, err := os.ReadFile(filepath.Join(h.ConfigDir, "journal", id+".jsonl"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(f), "\n") {
			var rec struct {
				At          time.Time
				Step, Event string
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Step != "" {
				at[rec.Step+"/"+rec.Event] = rec.At
			}
		}
		if a := at["stop/begin"]; !a.IsZero() {
			late = append(late, a.Sub(switchAt).Milliseconds())
			if first.IsZero() || a.Before(first) {
				first = a
			}
		}
		hosts = append(hosts, at)
	}
	for _, at := range hosts {
		for _, sp := range spans {
			if a, b := at[sp.from], at[sp.to]; !a.IsZero() && !b.IsZero() {
				st.add(sp.name, b.Sub(a))
			}
		}
		st.started(first, at["start/done"])
	}
	out := "      switch steps, "
	if len(late) > 0 {
		sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
		out += fmt.Sprintf("late %d/%d, ", median(late), late[len(late)-1])
	}
	return out + st.String()
}

func isExit(err error) bool {
	var ee interface{ ExitCode() int }
	return errors.As(err, &ee)
}

// pollHealthy checks the peer every 200 ms (the agent's default poll
// interval) until it is healthy, and returns when it was. It asks what the
// agent asks, in the same order and through the same client, so that the
// script's checks cost the simulated peers and the machine what the
// agent's do: GET /id for the release and the peers the consensus lists,
// the pinset until it is full (then not again), and GET /peers, the proof,
// only once /id lists every peer. Reading /version, the whole pinset and
// /peers at every poll, as this did before, took 0.29 of the 2 cores in
// the script's outage at N=50 and a seventh of the peers' CPU: it slowed
// the very baseline the daemons are compared with.
func pollHealthy(ctx context.Context, p simtest.Peer, version string, pins, n int) (time.Time, error) {
	api := cluster.NewClient(p.APIURL)
	defer api.CloseIdleConnections()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	full := false
	for !peerHealthy(ctx, api, version, pins, n, &full) {
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for peer %s to be healthy: %w", p.PeerID, ctx.Err())
		case <-tick.C:
		}
	}
	return time.Now(), nil
}

// peerHealthy: the peer answers with version, at least pins pins and n
// peers. full says the pinset was already seen whole.
func peerHealthy(ctx context.Context, api *cluster.Client, version string, pins, n int, full *bool) bool {
	h, err := api.Health(ctx)
	if err != nil || plan.CompareVersions(h.Version, version) != 0 {
		return false
	}
	if !*full {
		if got, err := api.PinCount(ctx); err != nil || got < pins {
			return false
		}
		*full = true
	}
	if len(h.ClusterPeers) < n {
		return false
	}
	ids, err := api.PeerIDs(ctx)
	return err == nil && len(ids) >= n
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// artifactServer serves a release's files on 127.0.0.1 and counts the bytes sent.
type artifactServer struct {
	srv  *http.Server
	args []string // announce arguments pointing at it
	size int64
	sent atomic.Int64
}

// serveArtifacts serves the files named by release arguments (--artifact PATH)
// and returns the same arguments with http:// URLs.
func serveArtifacts(rel []string) (*artifactServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the artifact server: %w", err)
	}
	s := &artifactServer{}
	files := map[string]string{}
	for i := 0; i < len(rel); i++ {
		s.args = append(s.args, rel[i])
		if rel[i] != "--artifact" || i+1 == len(rel) {
			continue
		}
		i++
		path := rel[i]
		fi, err := os.Stat(path)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("serving artifact: %w", err)
		}
		s.size += fi.Size()
		files["/"+filepath.Base(path)] = path
		s.args = append(s.args, "http://"+l.Addr().String()+"/"+filepath.Base(path))
	}
	s.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		n, _ := io.Copy(w, f)
		s.sent.Add(n)
	})}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// Close stops the server and waits a little for transfers under way.
func (s *artifactServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// procStatus reads field (VmRSS, VmHWM) in kB from /proc/PID/status of each pid.
func procStatus(pids []int, field string) ([]int64, error) {
	out := make([]int64, 0, len(pids))
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return nil, fmt.Errorf("reading the memory of daemon pid %d: %w", pid, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("parsing %s of pid %d: %q", field, pid, line)
				}
				out = append(out, kb)
			}
		}
	}
	return out, nil
}

// resetPeaks sets each process's VmHWM to its current RSS (clear_refs 5), so
// that VmHWM read after the upgrade is the peak during it. False if refused.
func resetPeaks(pids []int) bool {
	for _, pid := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			return false
		}
	}
	return true
}

const scaleHeader = "    N | announce->commit (daemon) | prepare | restart skew | downtime | plan done | plain script | ratio | RSS idle MB min/med/max (anon med) | RSS peak MB min/med/max | source bytes (artifacts x N)"

func (r *scaleResult) row() string {
	if r.Failed != "" {
		return fmt.Sprintf("%5d | failed after announce->commit %s, RSS idle %s, peak %s, %d bytes served: %s",
			r.N, r.AnnounceToOK.Round(time.Millisecond), mbSpread(r.RSSIdle), mbSpread(r.RSSPeak), r.SourceBytes, r.Failed)
	}
	return fmt.Sprintf("%5d | %25s | %7s | %12s | %8s | %9s | %12s | %5.2f | %34s | %23s | %d (%d x %d = %d)",
		r.N, fmt.Sprintf("%s (%s)", r.AnnounceToOK.Round(time.Millisecond), r.AnnounceDaemon.Round(time.Millisecond)),
		r.Prepare.Round(time.Millisecond), r.Skew.Round(100*time.Microsecond),
		r.Downtime.Round(time.Millisecond), r.Settled.Round(time.Millisecond), r.Plain.Round(time.Millisecond), r.ratio(),
		fmt.Sprintf("%s (%.1f)", mbSpread(r.RSSIdle), float64(median(r.AnonIdle))/1024), mbSpread(r.RSSPeak),
		r.SourceBytes, r.ArtifactSize, r.N, r.ArtifactSize*int64(r.N))
}

// ratio is the downtime over the plain script's (0: not measured).
func (r *scaleResult) ratio() float64 {
	if r.Plain <= 0 {
		return 0
	}
	return float64(r.Downtime) / float64(r.Plain)
}

// mesh says when idle memory was read.
func (r *scaleResult) mesh() string {
	if r.Fewest == r.N-1 {
		return fmt.Sprintf("idle memory read once every daemon was connected to the %d others, %s after setup", r.N-1, r.Meshed.Round(time.Second))
	}
	return fmt.Sprintf("idle memory read %s after setup with the mesh unfinished: a daemon was connected to %d of the %d others", r.Meshed.Round(time.Second), r.Fewest, r.N-1)
}

func reportScale(b *testing.B, r *scaleResult) {
	b.ReportMetric(float64(r.AnnounceToOK.Milliseconds()), "announce-commit-ms")
	b.ReportMetric(float64(r.AnnounceDaemon.Milliseconds()), "announce-commit-daemon-ms")
	b.ReportMetric(float64(r.Prepare.Milliseconds()), "prepare-ms")
	b.ReportMetric(float64(r.Skew.Microseconds())/1000, "restart-skew-ms")
	b.ReportMetric(float64(r.Downtime.Milliseconds()), "downtime-ms")
	b.ReportMetric(float64(r.Settled.Milliseconds()), "plan-done-ms")
	b.ReportMetric(float64(r.Plain.Milliseconds()), "plain-downtime-ms")
	b.ReportMetric(float64(median(r.RSSIdle))/1024, "rss-idle-median-MB")
	b.ReportMetric(float64(median(r.AnonIdle))/1024, "rss-anon-idle-median-MB")
	b.ReportMetric(float64(median(r.RSSPeak))/1024, "rss-peak-median-MB")
	b.ReportMetric(float64(r.SourceBytes), "source-bytes")
	b.ReportMetric(r.Meshed.Seconds(), "mesh-s")
	if r.OutageCPU != nil {
		b.ReportMetric(r.OutageCPU.Daemons, "outage-daemon-cores")
	}
	if r.IdleCPU != nil {
		b.ReportMetric(r.IdleCPU.Daemons, "idle-daemon-cores")
		b.ReportMetric(r.IdleCPU.Machine, "idle-machine-cores")
	}
}

func median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func mbSpread(v []int64) string {
	if len(v) == 0 {
		return "unknown"
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%.1f/%.1f/%.1f", float64(s[0])/1024, float64(median(s))/1024, float64(s[len(s)-1])/1024)
}

// logLine is one line of a daemon's log: its time and its fields.
type logLine struct {
	at     time.Time
	fields map[string]any
}

// findLogLine returns the first line of the log at path holding every one of
// words, parsed: the development encoder's ISO 8601 time before the fields
// (the harness's format), or a JSON line's "ts".
func findLogLine(path string, words ...string) (logLine, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return logLine{}, false
	}
next:
	for _, line := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		var l logLine
		i := strings.IndexByte(line, '{')
		if i < 0 || json.Unmarshal([]byte(line[i:]), &l.fields) != nil {
			continue
		}
		if ts, ok := l.fields["ts"].(float64); ok {
			l.at = time.Unix(0, int64(ts*1e9))
		} else if f := strings.Fields(line[:i]); len(f) > 0 {
			l.at, _ = time.Parse("2006-01-02T15:04:05.000Z0700", f[0])
		}
		return l, true
	}
	return logLine{}, false
}

// answered is when the announcing daemon answered its control request, and
// how long after taking it.
type answered struct {
	at   time.Time
	took time.Duration
}

// announceAnswered reads, from the announcing daemon's log, how long its
// control request took until plan id was committed (the raft leader
// answered, or its own plan state held it), and when it answered.
func announceAnswered(logPath, id string) (answered, error) {
	l, ok := findLogLine(logPath, "announced plan is in the plan state", id)
	if !ok {
		return answered{}, fmt.Errorf("%s: no line says when plan %s was in the plan state", logPath, id)
	}
	took, _ := l.fields["took"].(string)
	d, err := time.ParseDuration(took)
	if err != nil {
		return answered{}, fmt.Errorf("%s: the line on plan %s says it took %q: %w", logPath, id, took, err)
	}
	return answered{at: l.at, took: d}, nil
}

// announceSteps splits the CLI's announce (start to end) into the CLI before
// the daemon took the request, the daemon's part with the leader's raft
// commit inside it, and the CLI after the daemon answered. Log times have
// millisecond precision.
func announceSteps(c *harness.Cluster, id string, start, end time.Time, a answered) string {
	commit := "the leader's commit not found in any log"
	for i, h := range c.Hosts {
		if l, ok := findLogLine(h.LogPath, "plan proposed", id); ok {
			commit = fmt.Sprintf("the leader (daemon %d) committed it in %v", i, l.fields["commit_took"])
			break
		}
	}
	took := a.at.Add(-a.took)
	return fmt.Sprintf("announce: CLI %s before daemon 0 took it, daemon %s (%s), CLI %s after daemon 0 answered",
		took.Sub(start).Round(time.Millisecond), a.took.Round(time.Millisecond), commit, end.Sub(a.at).Round(time.Millisecond))
}
