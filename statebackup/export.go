package statebackup

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// PinStreamer is the live pinset of a running peer.
//
// StreamPins calls fn once per pin, in any order, with the pin's CID and the pin object exactly as the REST API
// gave it, and returns nil only if the whole pinset was delivered (a stream that ended with an error, such as a
// non-empty X-Stream-Error trailer, must return that error). It stops and returns fn's error if fn fails, and
// returns early when ctx ends.
type PinStreamer interface {
	StreamPins(ctx context.Context, fn func(cid string, raw json.RawMessage) error) error
}

// exportWriter writes the stored form of an export, gzip-compressed ndjson with one pin object per line, hashing
// and measuring the compressed bytes as they go out. Each CID is written once.
type exportWriter struct {
	buf  *bufio.Writer
	out  *countingWriter
	hash hash.Hash
	gz   *gzip.Writer
	seen pinSet
	pins int
}

func newExportWriter(w io.Writer) *exportWriter {
	h := sha256.New()
	out := &countingWriter{w: io.MultiWriter(w, h)}
	buf := bufio.NewWriterSize(out, 256<<10)
	return &exportWriter{buf: buf, out: out, hash: h, gz: gzip.NewWriter(buf), seen: pinSet{}}
}

var newline = []byte{'\n'}

// add writes one pin object unless its CID was already written. An object spread over several lines (a
// pretty-printed array) is compacted, since `state import` reads one object per line.
func (w *exportWriter) add(cid string, raw []byte) error {
	if !w.seen.add(cid) {
		return nil
	}
	if bytes.IndexByte(raw, '\n') >= 0 {
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return fmt.Errorf("compacting pin %s: %w", cid, err)
		}
		raw = compact.Bytes()
	}
	if _, err := w.gz.Write(raw); err != nil {
		return fmt.Errorf("writing pin %s: %w", cid, err)
	}
	if _, err := w.gz.Write(newline); err != nil {
		return fmt.Errorf("writing pin %s: %w", cid, err)
	}
	w.pins++
	return nil
}

func (w *exportWriter) close() error {
	if err := w.gz.Close(); err != nil {
		return fmt.Errorf("finishing compressed export: %w", err)
	}
	if err := w.buf.Flush(); err != nil {
		return fmt.Errorf("finishing compressed export: %w", err)
	}
	return nil
}

// storeExport writes an export whose pins fill delivers, then its manifest. On any failure, including ctx ending,
// nothing is left under the final names.
func (s *Store) storeExport(ctx context.Context, kind Kind, meta Meta, source string,
	fill func(add func(cid string, raw []byte) error) error) (*Manifest, error) {
	id, created := s.newID(kind, "")
	defer s.release(id)
	m := newManifest(id, kind, created, meta)
	m.File, m.Source = id+exportExt, source
	p, err := createPending(s.path(m.File))
	if err != nil {
		return nil, fmt.Errorf("storing %s backup: %w", kind, err)
	}
	defer p.abort()
	w := newExportWriter(p)
	if err := fill(w.add); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	if err := w.close(); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	if err := p.commit(); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	m.Pins, m.Size, m.SHA256 = w.pins, w.out.n, hex.EncodeToString(w.hash.Sum(nil))
	return s.finish(m)
}

// LiveExport streams the pinset of a running peer into a new backup in `state export` format, counting distinct
// pins and hashing as it goes, then writes the manifest. A CID seen twice is written and counted once.
func (s *Store) LiveExport(ctx context.Context, src PinStreamer, meta Meta) (*Manifest, error) {
	return s.storeExport(ctx, KindLiveExport, meta, "", func(add func(string, []byte) error) error {
		return src.StreamPins(ctx, func(cid string, raw json.RawMessage) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !json.Valid(raw) {
				return fmt.Errorf("pin %s: not valid JSON", cid)
			}
			got, err := cidOf(raw)
			if err != nil {
				return fmt.Errorf("pin %s: %w", cid, err)
			}
			if cid != "" && cid != got {
				return fmt.Errorf("pin streamed as %s holds cid %s", cid, got)
			}
			return add(got, bytes.TrimSpace(raw))
		})
	})
}

// AddExport stores a `state export` file (ndjson, a JSON array, or either gzip-compressed) as a backup of the
// given export kind, counting its distinct pins.
func (s *Store) AddExport(ctx context.Context, path string, kind Kind, meta Meta) (*Manifest, error) {
	if !kind.isExport() {
		return nil, fmt.Errorf("adding export %s: %q is not an export kind", path, kind)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("adding export %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("adding export %s: %w", path, err)
	}
	defer f.Close()
	return s.storeExport(ctx, kind, meta, abs, func(add func(string, []byte) error) error {
		r, err := maybeGunzip(ctxReader{ctx: ctx, r: f})
		if err != nil {
			return fmt.Errorf("reading %s: %w", abs, err)
		}
		return forEachPin(r, add)
	})
}

// forEachPin calls fn with the CID and object of each pin in an export.
func forEachPin(r io.Reader, fn func(cid string, raw []byte) error) error {
	pr, err := newPinReader(r)
	if err != nil {
		return err
	}
	for {
		raw, err := pr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		cid, err := cidOf(raw)
		if err != nil {
			return fmt.Errorf("pin %d: %w", pr.n, err)
		}
		if err := fn(cid, raw); err != nil {
			return err
		}
	}
}

// WriteExportTo writes the decompressed export of backup id to path, ready for `ipfs-cluster-service state
// import`. The stored file is verified in the same pass (checksum and pin count); path appears, atomically, only
// if every check passed, and is left as it was otherwise.
func (s *Store) WriteExportTo(ctx context.Context, id, path string) error {
	m, err := s.Get(id)
	if err != nil {
		return err
	}
	if !m.Kind.isExport() {
		return fmt.Errorf("writing backup %s as an export: it is a %s, not an export", id, m.Kind)
	}
	p, err := createPending(path)
	if err != nil {
		return fmt.Errorf("writing backup %s to %s: %w", id, path, err)
	}
	defer p.abort()
	buf := bufio.NewWriterSize(p, 256<<10)
	err = s.readStored(ctx, m, func(r io.Reader) error {
		return checkExport(m, r, buf)
	})
	if err != nil {
		return fmt.Errorf("writing backup %s to %s: %w", id, path, err)
	}
	if err := buf.Flush(); err != nil {
		return fmt.Errorf("writing backup %s to %s: %w", id, path, err)
	}
	if err := p.commit(); err != nil {
		return fmt.Errorf("writing backup %s to %s: %w", id, path, err)
	}
	s.log.Info("backup written out for import", zap.String("id", id), zap.String("file", path), zap.Int("pins", m.Pins))
	return nil
}

// checkExport decompresses a stored export, copying it to out, and checks its pin count against the manifest.
func checkExport(m *Manifest, stored io.Reader, out io.Writer) error {
	gz, err := gzip.NewReader(stored)
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	content := io.TeeReader(gz, out)
	n, err := countPins(content)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, content); err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	if n != m.Pins {
		return fmt.Errorf("%w: backup %s holds %d pins, its manifest says %d", ErrCountMismatch, m.ID, n, m.Pins)
	}
	return nil
}
