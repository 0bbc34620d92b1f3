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

// TestPinSetMemoryPerPin keeps the documented cost of deduplication honest: the CID set must stay well under
// the ~100 bytes per pin a set of CID strings would take.
func TestPinSetMemoryPerPin(t *testing.T) {
	const n = 200_000
	cids := make([]string, n)
	for i := range cids {
		cids[i] = syntheticCID(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	set := pinSet{}
	for _, c := range cids {
		set.add(c)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(set)
	runtime.KeepAlive(cids)
	perPin := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("CID set: %.1f bytes per pin", perPin)
	if len(set) != n || perPin > 60 {
		t.Fatalf("%d entries, %.1f bytes per pin; want %d entries and at most 60 bytes", len(set), perPin, n)
	}
}
