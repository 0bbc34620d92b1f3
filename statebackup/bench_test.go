package statebackup

import (
	"context"
	"runtime"
	"testing"

	"go.uber.org/zap"
)

const benchPins = 100_000

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func rawSize(pins [][]byte) int64 {
	var n int64
	for _, p := range pins {
		n += int64(len(p)) + 1
	}
	return n
}

// BenchmarkLiveExport measures a live export of 100,000 pins: MB/s of pin objects taken in, and allocations.
func BenchmarkLiveExport(b *testing.B) {
	s := benchStore(b)
	src := &fakeStreamer{pins: syntheticPins(benchPins)}
	b.SetBytes(rawSize(asBytes(src)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := s.LiveExport(context.Background(), src, Meta{})
		if err != nil {
			b.Fatal(err)
		}
		if m.Pins != benchPins {
			b.Fatalf("pins = %d", m.Pins)
		}
		b.StopTimer()
		if _, err := s.Prune(0, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkVerify measures verifying a stored export of 100,000 pins, in MB/s of decompressed pin objects.
func BenchmarkVerify(b *testing.B) {
	s := benchStore(b)
	src := &fakeStreamer{pins: syntheticPins(benchPins)}
	m, err := s.LiveExport(context.Background(), src, Meta{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(rawSize(asBytes(src)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(context.Background(), m.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func asBytes(f *fakeStreamer) [][]byte {
	out := make([][]byte, len(f.pins))
	for i, p := range f.pins {
		out[i] = p
	}
	return out
}

// TestDedupeMemoryIsFlat keeps the memory of the search for repeated CIDs honest: once past its exact phase it
// holds a fixed-size filter, so three times more pins must not cost more memory.
func TestDedupeMemoryIsFlat(t *testing.T) {
	heapAfter := func(n int) (uint64, int) {
		var ms runtime.MemStats
		runtime.GC()
		d := newCIDDedupe(defaultDedupe)
		for i := range n {
			d.add(syntheticCID(i))
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		runtime.KeepAlive(d)
		return ms.HeapAlloc, len(d.suspects)
	}
	small, s1 := heapAfter(100_000)
	large, s2 := heapAfter(300_000)
	t.Logf("heap with the dedupe of 100,000 CIDs: %.1f MiB; of 300,000: %.1f MiB; suspects %d and %d",
		float64(small)/(1<<20), float64(large)/(1<<20), s1, s2)
	if large > small+(1<<20) {
		t.Fatalf("the dedupe grew by %.1f MiB from 100,000 to 300,000 CIDs, want flat", float64(large-small)/(1<<20))
	}
}
