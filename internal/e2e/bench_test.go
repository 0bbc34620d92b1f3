package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/harness"
)

// BenchmarkStandardUpgrade prints, for 3 simulated peers, the downtime of a
// coordinated standard upgrade (first stop to last peer verified) and the skew
// between the first and last stop, next to a plain script that stops every
// peer, swaps the binary and starts them again, on the same peers in the same
// run, waiting for the same health (version, full pinset).
func BenchmarkStandardUpgrade(b *testing.B) {
	const peers, pins = 3, 200
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		root := b.TempDir()
		c, err := harness.Setup(ctx, harness.Options{Root: root, Peers: peers, From: simtest.BuildSpec{Version: "1.0.8"},
			UpgradedBin: upgradedBin, BuildDir: buildDir, Tune: testTimeouts})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := c.AddPins(ctx, 0, pins, "bench"); err != nil {
			b.Fatal(err)
		}
		if err := c.WaitPins(ctx, pins); err != nil {
			b.Fatal(err)
		}
		rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
		if err != nil {
			b.Fatal(err)
		}
		id, err := c.Announce(ctx, 0, rel, "--procedure", "standard", "--wait")
		if err != nil {
			b.Fatal(err)
		}
		_, down, skew, err := journalTimes(c, id)
		if err != nil {
			b.Fatal(err)
		}
		c.Close() // daemons stop their peers
		plain, plainSkew, err := plainScript(ctx, c, pins)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(down.Milliseconds()), "downtime-ms")
		b.ReportMetric(float64(skew.Microseconds())/1000, "stop-skew-ms")
		b.ReportMetric(float64(plain.Milliseconds()), "plain-downtime-ms")
		fmt.Printf("\n%d peers, %d pins: coordinated downtime %s (stop skew %s); plain script downtime %s (stop skew %s); ratio %.2f\n",
			peers, pins, down.Round(time.Millisecond), skew.Round(100*time.Microsecond), plain.Round(time.Millisecond),
			plainSkew.Round(100*time.Microsecond), float64(down)/float64(plain))
	}
}

// journalTimes reads every host's journal of plan id: first stop to last
// verification, and last stop minus first stop.
func journalTimes(c *harness.Cluster, id string) (firstStop time.Time, downtime, skew time.Duration, err error) {
	var lastStop, lastVerify time.Time
	for _, h := range c.Hosts {
		f, err := os.Open(filepath.Join(h.ConfigDir, "journal", id+".jsonl"))
		if err != nil {
			return time.Time{}, 0, 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r struct {
				At    time.Time
				Step  string
				Event string
			}
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			switch {
			case r.Step == "stop" && r.Event == "begin":
				if firstStop.IsZero() || r.At.Before(firstStop) {
					firstStop = r.At
				}
				if r.At.After(lastStop) {
					lastStop = r.At
				}
			case r.Step == "verify" && r.Event == "done" && r.At.After(lastVerify):
				lastVerify = r.At
			}
		}
		f.Close()
	}
	if firstStop.IsZero() || lastVerify.IsZero() {
		return time.Time{}, 0, 0, fmt.Errorf("journals of plan %s lack a stop or a verification", id)
	}
	return firstStop, lastVerify.Sub(firstStop), lastStop.Sub(firstStop), nil
}

// plainScript is what an operator's script does: start the old peers, then
// stop them all, swap to the new binary, start them all, and wait for every
// peer to answer with the new version and the full pinset.
func plainScript(ctx context.Context, c *harness.Cluster, pins int) (time.Duration, time.Duration, error) {
	newBin, err := simtest.Build(ctx, c.BuildDir, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		return 0, 0, err
	}
	procs := make([]*simtest.Process, len(c.Peers))
	for i, p := range c.Peers {
		if procs[i], err = simtest.Start(newBin.Service, p, nil); err != nil {
			return 0, 0, err
		}
	}
	if err := c.WaitPins(ctx, pins); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	stops := make([]time.Time, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stops[i] = time.Now()
			_ = p.Stop(ctx)
		}()
	}
	wg.Wait()
	// The swap: the peers already run 1.1.6 after the coordinated upgrade, so the
	// script restarts the same binary; what it measures is the stop-start cycle.
	for i, p := range c.Peers {
		if procs[i], err = simtest.Start(newBin.Service, p, nil); err != nil {
			return 0, 0, err
		}
	}
	if err := c.WaitHealthy(ctx, "1.1.6", pins); err != nil {
		return 0, 0, err
	}
	down := time.Since(start)
	for _, p := range procs {
		_ = p.Stop(ctx)
	}
	first, last := stops[0], stops[0]
	for _, s := range stops {
		if s.Before(first) {
			first = s
		}
		if s.After(last) {
			last = s
		}
	}
	return down, last.Sub(first), nil
}

// BenchmarkUnavailability prints the longest time during which no peer of
// the cluster answered, for a standard and a rolling upgrade of the same
// 3- and 5-peer clusters, measured by a client looping over every peer.
func BenchmarkUnavailability(b *testing.B) {
	for i := 0; i < b.N; i++ {
		for _, peers := range []int{3, 5} {
			for _, proc := range []string{"standard", "rolling"} {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				c, err := harness.Setup(ctx, harness.Options{Root: b.TempDir(), Peers: peers, From: simtest.BuildSpec{Version: "1.0.8"},
					UpgradedBin: upgradedBin, BuildDir: buildDir, Tune: testTimeouts})
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Start(ctx); err != nil {
					b.Fatal(err)
				}
				if _, err := c.AddPins(ctx, 0, 50, "unavail"); err != nil {
					b.Fatal(err)
				}
				if err := c.WaitPins(ctx, 50); err != nil {
					b.Fatal(err)
				}
				rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
				if err != nil {
					b.Fatal(err)
				}
				av, stop := watchAvailability(ctx, c)
				start := time.Now()
				if _, err := c.Announce(ctx, 0, rel, "--procedure", proc, "--wait"); err != nil {
					b.Fatal(err)
				}
				took := time.Since(start)
				stop()
				c.Close()
				cancel()
				worst := time.Duration(0)
				for _, w := range av.worst {
					worst = max(worst, w)
				}
				fmt.Printf("%d peers, %-8s: cluster-wide unavailability %6s, longest single-peer gap %6s, upgrade took %s\n",
					peers, proc, av.cluster.Round(time.Millisecond), worst.Round(time.Millisecond), took.Round(100*time.Millisecond))
			}
		}
	}
}
