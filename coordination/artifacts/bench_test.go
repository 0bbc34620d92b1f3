package artifacts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/upgraded/upgraded/sidecar/stage"
)

// BenchmarkSharedFetch has N in-process daemons on 127.0.0.1 fetch the same
// 1 MiB artifact at once from an http source, and reports the bytes the
// source served (source-bytes, per fetch of all N) and the wall time: the
// source bytes stay at one copy whatever N. BenchmarkUnsharedFetch is the
// same without sharing (stage.Fetch on every host), for comparison. It also
// reports the artifact requests the daemons answered per fetch (requests).
//
//	go test -run '^$' -bench SharedFetch -benchtime 3x ./coordination/artifacts/
func BenchmarkSharedFetch(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		// One swarm per N, kept across the runs of the sub-benchmark: its
		// 50*49/2 handshakes are not what is measured.
		ds := startSwarm(b, n, swarmOpts{retry: 100 * time.Millisecond, seederTimeout: 30 * time.Second, maxWait: 3 * time.Minute})
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var served int64
			var wall time.Duration
			asked := func() (n int) {
				for _, d := range ds {
					n += d.seen.requests()
				}
				return n
			}
			asked0 := asked()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				src := newSource(b, 1<<20) // a new artifact each round: nobody holds it yet
				p := planOf(fmt.Sprintf("plan-%d", i), ds, src.artifact())
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				b.StartTimer()
				start := time.Now()
				_, errs := fetchAll(ctx, ds, p, src.artifact())
				wall += time.Since(start)
				b.StopTimer()
				cancel()
				for j, err := range errs {
					if err != nil {
						b.Fatalf("daemon %d: %v", j, err)
					}
				}
				served += src.served.Load()
				for _, d := range ds {
					os.Remove(d.dir + "/release.tar.gz")
				}
				b.StartTimer()
			}
			perRound := float64(served) / float64(b.N)
			requests := float64(asked()-asked0) / float64(b.N)
			b.ReportMetric(perRound, "source-bytes")
			b.ReportMetric(requests, "requests")
			fmt.Printf("shared fetch: N=%d hosts, artifact 1048576 bytes: source served %.0f bytes per fetch, %.0f requests among the daemons, wall %v per fetch (%d rounds)\n",
				n, perRound, requests, (wall / time.Duration(b.N)).Round(time.Millisecond), b.N)
		})
	}
}

func BenchmarkUnsharedFetch(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			dirs := make([]string, n)
			for i := range dirs {
				dirs[i] = b.TempDir()
			}
			var served int64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				src := newSource(b, 1<<20)
				b.StartTimer()
				var wg sync.WaitGroup
				errs := make([]error, n)
				for j := range dirs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, errs[j] = stage.Fetch(context.Background(), stage.Artifact{Source: src.artifact().Source, SHA256: src.sha}, dirs[j])
					}()
				}
				wg.Wait()
				b.StopTimer()
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				served += src.served.Load()
				b.StartTimer()
			}
			perRound := float64(served) / float64(b.N)
			b.ReportMetric(perRound, "source-bytes")
			fmt.Printf("unshared fetch: N=%d hosts, artifact 1048576 bytes: source served %.0f bytes per fetch\n", n, perRound)
		})
	}
}
