package raftnet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// BenchmarkApplyCommittedEverywhere measures, in a group of N in-process
// daemons (real libp2p on 127.0.0.1, raft-boltdb on disk, the daemons' raft
// timing), how long a command takes from Apply on the leader to Apply
// returning (committed by a majority of the voters: apply-ms) and to every
// daemon's FSM having applied it (everywhere-ms), with at most 5 voters and
// with every daemon a voter (MaxVoters 99: the largest odd number not above
// N, so 29 of 30). The group is built again for every round the benchmark
// runs; -benchtime=50x keeps that to two rounds.
//
//	go test -run '^$' -bench ApplyCommittedEverywhere -benchtime=50x ./coordination/raftnet/
func BenchmarkApplyCommittedEverywhere(b *testing.B) {
	for _, n := range []int{3, 10, 30} {
		for _, mode := range []struct {
			name      string
			maxVoters int
		}{{"max5voters", 5}, {"allvoters", 99}} {
			b.Run(fmt.Sprintf("N=%d/%s", n, mode.name), func(b *testing.B) { benchApply(b, n, mode.maxVoters) })
		}
	}
}

// benchLogger keeps warnings and errors in bench-raft.log under the test's
// temporary folder and prints its path if the benchmark fails.
func benchLogger(b *testing.B) func() *zap.Logger {
	path := filepath.Join(b.TempDir(), "bench-raft.log")
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	cfg.OutputPaths, cfg.ErrorOutputPaths = []string{path}, []string{path}
	cfg.Sampling = nil
	log, err := cfg.Build()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if b.Failed() {
			if data, err := os.ReadFile(path); err == nil {
				b.Logf("raft warnings and errors:\n%s", data)
			}
		}
	})
	return func() *zap.Logger { return log }
}

// everywhere waits until every FSM of a group applied one command.
type everywhere struct {
	mu   sync.Mutex
	cmd  string
	left int
	done chan struct{}
}

func (e *everywhere) expect(cmd string, n int) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cmd, e.left, e.done = cmd, n, make(chan struct{})
	return e.done
}

func (e *everywhere) applied(cmd string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cmd != e.cmd || e.left == 0 {
		return
	}
	if e.left--; e.left == 0 {
		close(e.done)
	}
}

func benchApply(b *testing.B, n, maxVoters int) {
	// Newcomers join through the first daemon, the leader, so that building
	// 30 daemons on a loaded machine does not lean on the newest ones.
	ms := groupVia(b, n, benchLogger(b), func(c *Config) {
		// The daemons' timing (raft's defaults), only the voter cap changes.
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, c.CommitTimeout, c.RequestTimeout = 0, 0, 0, 0, 0
		c.MaxVoters = maxVoters
	}, func(ms []*member) *member { return ms[0] }, func(c *p2p.Config) {
		// The daemons' swarm timing too: tests advertise addresses every
		// 200ms, which 30 daemons on two cores cannot afford.
		c.ReconnectMin, c.ReconnectMax, c.AdvertiseInterval = 0, 0, 0
	})
	voters := voterTarget(maxVoters, n)
	waitSuffrage(b, ms, voters, n-voters)
	var e everywhere
	for _, m := range ms {
		m.fsm.setApplied(e.applied)
	}
	leader := leaderOf(b, ms)
	run := func(cmd string) (applied, all time.Duration) {
		done := e.expect(cmd, n)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		began := time.Now()
		if _, err := leader.raft.Apply(ctx, []byte(cmd)); err != nil {
			b.Fatalf("applying %s: %v", cmd, err)
		}
		applied = time.Since(began)
		select {
		case <-done:
		case <-ctx.Done():
			b.Fatalf("%s not applied on every daemon within 30s", cmd)
		}
		return applied, time.Since(began)
	}
	run("warm-up")
	var sumApplied, sumAll time.Duration
	b.ResetTimer()
	for i := range b.N {
		a, all := run(fmt.Sprintf("bench-%d", i))
		sumApplied += a
		sumAll += all
	}
	b.StopTimer()
	applyMS := float64(sumApplied.Microseconds()) / 1000 / float64(b.N)
	allMS := float64(sumAll.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(applyMS, "apply-ms")
	b.ReportMetric(allMS, "everywhere-ms")
	b.ReportMetric(float64(voters), "voters")
	fmt.Printf("N=%d voters=%d: apply %.2f ms, committed on every daemon %.2f ms (mean of %d)\n", n, voters, applyMS, allMS, b.N)
}
