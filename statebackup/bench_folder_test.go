package statebackup

import (
	"context"
	"encoding/base32"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
)

// BenchmarkCopyFolder measures the copy of a stopped peer's state folder, the
// step of the outage between the peer's stop and its start on every host,
// and the restore a rollback makes of it. The folder is 64 MB in 16 files of
// one of two kinds: what a datastore that compresses its blocks writes
// (pebble's and leveldb's tables, which do not compress again: random bytes
// stand for them) and what one that does not writes (pin records: CIDs and
// their options). MB/s is of the folder; archive-% is the archive's size.
//
//	go test ./statebackup -run '^$' -bench BenchmarkCopyFolder
func BenchmarkCopyFolder(b *testing.B) {
	for _, kind := range []struct {
		name string
		fill func(r *rand.Rand, n int) []byte
	}{{"compressed-tables", randomBytes}, {"pin-records", pinRecords}} {
		dir := b.TempDir()
		folder := filepath.Join(dir, "pebble")
		size := writeStateFolder(b, folder, kind.fill)
		s, err := Open(filepath.Join(dir, "backups"), zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		var last *Manifest
		b.Run(kind.name+"/copy", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				m, err := s.CopyFolder(context.Background(), folder, Meta{})
				if err != nil {
					b.Fatal(err)
				}
				last = m
				b.StopTimer()
				if _, err := s.Prune(1, nil); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(100*float64(last.Size)/float64(size), "archive-%")
		})
		b.Run(kind.name+"/restore", func(b *testing.B) {
			b.SetBytes(size)
			dst := filepath.Join(dir, "restored")
			for b.Loop() {
				if err := s.RestoreFolder(context.Background(), last.ID, dst); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				// RestoreFolder keeps what it replaced beside it: drop all but the new copy.
				olds, _ := filepath.Glob(dst + ".replaced-*")
				for _, o := range olds {
					if err := os.RemoveAll(o); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
		})
	}
}

// writeStateFolder writes 16 files of 4 MB made by fill under folder and returns their size.
func writeStateFolder(b *testing.B, folder string, fill func(r *rand.Rand, n int) []byte) int64 {
	b.Helper()
	if err := os.MkdirAll(folder, 0o755); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var size int64
	for i := range 16 {
		data := fill(r, 4<<20)
		if err := os.WriteFile(filepath.Join(folder, fmt.Sprintf("%06d.sst", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
		size += int64(len(data))
	}
	return size
}

func randomBytes(r *rand.Rand, n int) []byte {
	out := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			out[i+j] = byte(v >> (8 * j))
		}
	}
	return out
}

// pinRecords is n bytes of key/value records shaped like a pinset's: a key
// naming the CID in base32, a value holding its binary form and its options.
func pinRecords(r *rand.Rand, n int) []byte {
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	out := make([]byte, 0, n+256)
	h := make([]byte, 34)
	for len(out) < n {
		h[0], h[1] = 0x12, 0x20 // sha2-256 multihash
		for i := 2; i < len(h); i++ {
			h[i] = byte(r.Uint32())
		}
		out = append(out, "/pins/b"...)
		out = append(out, enc.EncodeToString(h)...)
		out = append(out, 0x12, 0x22)
		out = append(out, h...)
		out = append(out, "\x18\x01\x20\xff\xff\xff\xff\x0f\x28\xff\xff\xff\xff\x0f\x42\x07default"...)
	}
	return out[:n]
}
