// Package e2e runs whole clusters: real upgraded daemon processes (real
// libp2p, real raft, real files) beside simulated IPFS Cluster peers on
// 127.0.0.1, driven through the real CLI.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/harness"
)

var (
	upgradedBin string
	buildDir    string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "upgraded-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	upgradedBin = filepath.Join(dir, "upgraded")
	buildDir = filepath.Join(dir, "sim")
	// Built as it ships (see `make dist`): static, without cgo's libc, whose
	// pages would otherwise count in every daemon's resident memory.
	cmd := exec.Command("go", "build", "-trimpath", "-o", upgradedBin, "../../cmd/upgraded")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building upgraded:", err)
		return 1
	}
	return m.Run()
}

// testTimeouts keep failing scenarios short.
func testTimeouts(c *config.Config) {
	c.Timeouts.Verify = 8 * time.Second
	c.Timeouts.Prepare = 60 * time.Second
	c.Timeouts.Switch = 60 * time.Second
	c.Timeouts.Rollback = 60 * time.Second
	c.Runner.StopTimeout = 5 * time.Second
}

type scenario struct {
	peers     int
	consensus string
	from      string
	pins      int
	tune      func(i int, c *config.Config) // per-host configuration on top of testTimeouts
}

// newCluster starts a cluster with pins on every peer; it is closed with the test.
func newCluster(t *testing.T, ctx context.Context, s scenario) *harness.Cluster {
	t.Helper()
	if s.consensus == "" {
		s.consensus = "crdt"
	}
	root := t.TempDir()
	c, err := harness.Setup(ctx, harness.Options{Root: root, Peers: s.peers, Consensus: s.consensus,
		From: simtest.BuildSpec{Version: s.from}, UpgradedBin: upgradedBin, BuildDir: buildDir, Tune: testTimeouts, TuneHost: s.tune})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			dumpLogs(t, c)
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.pins > 0 {
		if _, err := c.AddPins(ctx, 0, s.pins, t.Name()); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitPins(ctx, s.pins); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func dumpLogs(t *testing.T, c *harness.Cluster) {
	for _, h := range c.Hosts {
		b, _ := os.ReadFile(h.LogPath)
		if len(b) > 12000 {
			b = b[len(b)-12000:]
		}
		t.Logf("---- daemon %d log (tail) ----\n%s", h.Index, b)
	}
}

// upgrade announces spec through daemon 0 and waits for the plan to end.
func upgrade(t *testing.T, ctx context.Context, c *harness.Cluster, spec simtest.BuildSpec, extra ...string) *plan.Plan {
	t.Helper()
	rel, err := c.Release(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Announce(ctx, 0, rel, extra...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.WaitPlan(ctx, 0, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// requireAll checks every peer runs version with at least pins pins, waiting a little for replication.
func requireAll(t *testing.T, ctx context.Context, c *harness.Cluster, version string, pins int) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := simtest.WaitFor(wctx, fmt.Sprintf("every peer on %s with %d pins", version, pins), func() bool {
		for _, v := range c.Views(wctx) {
			if v.Err != nil || v.Version != version || v.Pins < pins {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%v: %+v", err, c.Views(ctx))
	}
}
