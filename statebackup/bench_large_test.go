package statebackup

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkLargeState measures backup (a live export), verify and the write-out a restore imports, for 100,000
// and 1,000,000 pins, to show how the cost grows: seconds, MB/s of pin objects (uncompressed ndjson), and peak
// heap. The pins are generated one at a time as they are streamed, so the heap measured is the backup's own.
// Run it alone; it takes tens of seconds:
//
//	go test ./statebackup -run '^$' -bench BenchmarkLargeState -benchtime 1x
func BenchmarkLargeState(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		l := &largeState{pins: n, dir: b.TempDir()}
		b.Run(fmt.Sprintf("pins=%d/backup", n), l.benchBackup)
		b.Run(fmt.Sprintf("pins=%d/verify", n), l.benchVerify)
		b.Run(fmt.Sprintf("pins=%d/write-export", n), l.benchWriteExport)
	}
}

// largeState is one size's store and its newest backup, shared by that size's three benchmarks.
type largeState struct {
	pins  int
	dir   string
	store *Store
	m     *Manifest
	raw   int64 // uncompressed bytes of the pinset
}

func (l *largeState) backup(b *testing.B) {
	if l.store == nil {
		s, err := Open(filepath.Join(l.dir, "backups"), zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		l.store = s
	}
	src := &generatedPins{n: l.pins}
	m, err := l.store.LiveExport(context.Background(), src, Meta{ClusterVersion: "1.1.6"})
	if err != nil {
		b.Fatal(err)
	}
	if m.Pins != l.pins {
		b.Fatalf("backup holds %d pins, want %d", m.Pins, l.pins)
	}
	l.m, l.raw = m, src.bytes
}

func (l *largeState) benchBackup(b *testing.B) {
	l.measure(b, "backup", func() {
		l.backup(b)
		b.StopTimer()
		if _, err := l.store.Prune(1, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	})
}

func (l *largeState) benchVerify(b *testing.B) {
	if l.m == nil {
		l.backup(b)
	}
	l.measure(b, "verify", func() {
		if _, err := l.store.Verify(context.Background(), l.m.ID); err != nil {
			b.Fatal(err)
		}
	})
}

func (l *largeState) benchWriteExport(b *testing.B) {
	if l.m == nil {
		l.backup(b)
	}
	out := filepath.Join(l.dir, "import.ndjson")
	l.measure(b, "write-export", func() {
		if err := l.store.WriteExportTo(context.Background(), l.m.ID, out); err != nil {
			b.Fatal(err)
		}
	})
}

// measure runs op in b.Loop while sampling the heap, then reports seconds, MB/s and memory.
func (l *largeState) measure(b *testing.B, what string, op func()) {
	if l.raw > 0 {
		b.SetBytes(l.raw)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := startPeakSampler()
	for b.Loop() {
		op()
	}
	top := peak.stop()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if l.raw > 0 && what == "backup" {
		b.SetBytes(l.raw) // known only after the first backup
	}
	secs := b.Elapsed().Seconds() / float64(b.N)
	mbps := float64(l.raw) / 1e6 / secs
	peakMB := float64(top) / (1 << 20)
	allocMB := float64(after.TotalAlloc-before.TotalAlloc) / (1 << 20) / float64(b.N)
	b.ReportMetric(secs, "s/op")
	b.ReportMetric(peakMB, "peak-heap-MiB")
	b.ReportMetric(allocMB, "alloc-MiB/op")
	b.Logf("%s of %d pins (%.1f MB ndjson, %.1f MB stored): %.2f s, %.1f MB/s, peak heap in use %.1f MiB "+
		"(%.1f MiB before), %.0f MiB allocated per run", what, l.pins, float64(l.raw)/1e6, float64(l.m.Size)/1e6,
		secs, mbps, peakMB, float64(before.HeapInuse)/(1<<20), allocMB)
}

// peakSampler records the highest HeapInuse seen while it runs; its goroutine is stopped by stop.
type peakSampler struct {
	quit chan struct{}
	done chan uint64
}

func startPeakSampler() *peakSampler {
	p := &peakSampler{quit: make(chan struct{}), done: make(chan uint64)}
	go func() {
		var ms runtime.MemStats
		var top uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			top = max(top, ms.HeapInuse)
			select {
			case <-p.quit:
				p.done <- top
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *peakSampler) stop() uint64 {
	close(p.quit)
	return <-p.done
}

// generatedPins streams n pin objects shaped like 1.1.6's, made one at a time into one reused buffer, and counts
// the bytes it delivered.
type generatedPins struct {
	n     int
	bytes int64
}

func (g *generatedPins) StreamPins(ctx context.Context, fn func(cid string, raw json.RawMessage) error) error {
	g.bytes = 0
	buf := make([]byte, 0, 512)
	for i := range g.n {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		cid := syntheticCID(i)
		buf = append(buf[:0], `{"replication_factor_min":-1,"replication_factor_max":-1,"name":"pin-`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `","mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z",`+
			`"metadata":null,"pin_update":null,"origins":[],"cid":"`...)
		buf = append(buf, cid...)
		buf = append(buf, `","type":"pin","allocations":[],"max_depth":-1,"reference":null,"timestamp":"2026-11-24T11:31:28Z"}`...)
		g.bytes += int64(len(buf)) + 1
		if err := fn(cid, buf); err != nil {
			return err
		}
	}
	return nil
}
