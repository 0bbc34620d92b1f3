package chaos

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/harness"
)

// `make chaos` and `make soak` set these; `make test` runs the defaults: a
// smoke subset of the matrix and a soak of one upgrade there and back.
var (
	full         = flag.Bool("chaos.full", false, "run the whole fault matrix instead of the smoke subset")
	parallel     = flag.Int("chaos.parallel", 2, "scenarios run at once")
	only         = flag.String("chaos.only", "", "run only scenarios whose name contains this (phase/fault)")
	soakUpgrades = flag.Int("soak.upgrades", 2, "upgrades of the soak run (2: there and back)")
)

var env Env

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "upgraded-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env = Env{UpgradedBin: filepath.Join(dir, "upgraded"), BuildDir: filepath.Join(dir, "sim"), Root: dir}
	// Built as it ships (see `make dist`): static, without cgo's libc, whose
	// pages would otherwise count in every daemon's resident memory.
	cmd := exec.Command("go", "build", "-trimpath", "-o", env.UpgradedBin, "../../cmd/upgraded")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building upgraded:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := Build(ctx, env); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// smoke is the subset `make test` runs: one fault of each kind of machinery
// (a test hook, a killed daemon, a lost leader) at three phases.
var smoke = []Scenario{
	{PhasePrepare, FaultDiskFull},
	{PhaseStop, FaultDaemonKill},
	{PhaseStart, FaultLeaderLoss},
}

// TestMatrix plays each scenario on its own cluster and prints the table;
// any split version or lost pin fails it.
func TestMatrix(t *testing.T) {
	scenarios := smoke
	if *full {
		scenarios = Matrix()
	}
	if *only != "" {
		var keep []Scenario
		for _, s := range Matrix() {
			if strings.Contains(s.String(), *only) {
				keep = append(keep, s)
			}
		}
		scenarios = keep
	}
	if len(scenarios) == 0 {
		t.Fatalf("no scenario matches %q", *only)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(scenarios))*5*time.Minute)
	defer cancel()
	results := make([]*Result, len(scenarios))
	sem := make(chan struct{}, max(*parallel, 1))
	var wg sync.WaitGroup
	for i, s := range scenarios {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = Run(ctx, env, s)
			t.Logf("%s: %s in %s (%v)", s, results[i].Outcome, results[i].Took.Round(time.Second), results[i].Err)
		}()
	}
	wg.Wait()
	var b strings.Builder
	WriteTable(&b, results)
	fmt.Print("\n" + b.String())
	for _, r := range results {
		if !r.Passed() {
			t.Errorf("%s: %v", r.Scenario, r.Err)
			for _, l := range r.Logs {
				t.Log(l)
			}
		}
	}
}

// TestSoak upgrades back and forth while a client pins; every acknowledged
// pin must be on every peer at the end.
func TestSoak(t *testing.T) {
	n := *soakUpgrades
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n+2)*2*time.Minute)
	defer cancel()
	e := env
	e.Root = t.TempDir()
	res, err := Soak(ctx, e, n, t.Logf)
	fmt.Printf("soak: %d upgrades announced, %d done, %d pins acknowledged, %d checked on every peer, %s\n",
		res.Upgrades, res.Succeeded, res.PinsAcked, res.PinsChecked, res.Took.Round(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded != n || res.PinsAcked == 0 {
		t.Fatalf("%d of %d upgrades done, %d pins acknowledged", res.Succeeded, n, res.PinsAcked)
	}
}

// TestReached: which (plan phase, victim step) pairs count as a phase reached.
func TestReached(t *testing.T) {
	cases := []struct {
		name string
		ph   Phase
		pp   plan.Phase
		st   plan.Step
		want bool
	}{
		{"prepare while preparing", PhasePrepare, plan.PhasePreparing, plan.StepPreparing, true},
		{"prepare not while pending", PhasePrepare, plan.PhasePreparing, plan.StepPending, false},
		{"barrier once prepared", PhaseBarrier, plan.PhasePreparing, plan.StepPrepared, true},
		{"swap seen late at starting", PhaseSwap, plan.PhaseSwitching, plan.StepStarting, true},
		{"stop not while prepared", PhaseStop, plan.PhaseSwitching, plan.StepPrepared, false},
		{"rollback only when rolling back", PhaseRollback, plan.PhaseSwitching, plan.StepFailed, false},
		{"rollback", PhaseRollback, plan.PhaseRollingBack, plan.StepRollingBack, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := reached(tc.ph, tc.pp, tc.st); got != tc.want {
				t.Fatalf("reached(%s, %s, %s) = %v", tc.ph, tc.pp, tc.st, got)
			}
		})
	}
}

// TestVerdict: the invariant itself.
func TestVerdict(t *testing.T) {
	v := func(version string, pins int) harness.PeerView { return harness.PeerView{Version: version, Pins: pins} }
	cases := []struct {
		name  string
		views []harness.PeerView
		want  string
		ok    bool
	}{
		{"all on target", []harness.PeerView{v("1.1.6", 10), v("1.1.6", 12), v("1.1.6", 10)}, "1.1.6", true},
		{"split", []harness.PeerView{v("1.1.6", 10), v("1.0.8", 10), v("1.1.6", 10)}, "1.1.6", false},
		{"lost pin", []harness.PeerView{v("1.0.8", 10), v("1.0.8", 9), v("1.0.8", 10)}, "1.0.8", false},
		{"one version but not the expected one", []harness.PeerView{v("1.0.8", 10), v("1.0.8", 10)}, "1.1.6", false},
		{"peer down", []harness.PeerView{v("1.0.8", 10), {Err: os.ErrDeadlineExceeded}}, "1.0.8", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := verdict(tc.views, tc.want, 10); (err == nil) != tc.ok {
				t.Fatalf("verdict = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestNoEffect: the table marks faults that could not change anything at
// the step they hit.
func TestNoEffect(t *testing.T) {
	cases := []struct {
		s        Scenario
		seen     string
		noEffect bool
	}{
		{Scenario{PhasePrepare, FaultDiskFull}, "preparing (plan preparing)", false},
		{Scenario{PhaseStop, FaultDiskFull}, "stopping (plan switching)", true},
		{Scenario{PhaseRollback, FaultDiskFull}, "rolling-back (plan rolling-back)", true},
		{Scenario{PhaseSwap, FaultSlowPeer}, "swapping (plan switching)", false},
		{Scenario{PhaseVerify, FaultSlowPeer}, "starting (plan switching)", true},
		{Scenario{PhaseRollback, FaultSlowPeer}, "failed (plan rolling-back)", false},
		{Scenario{PhaseVerify, FaultDaemonKill}, "starting (plan switching)", false},
	}
	for _, tc := range cases {
		t.Run(tc.s.String(), func(t *testing.T) {
			if got := noEffect(tc.s, tc.seen) != ""; got != tc.noEffect {
				t.Fatalf("noEffect(%s, %q) = %v", tc.s, tc.seen, got)
			}
		})
	}
}
