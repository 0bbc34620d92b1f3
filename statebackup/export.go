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
// and measuring the compressed bytes as they go out. A CID certainly seen before is not written again; a suspect
// (dedupe.go) is written, and dropRepeats settles it once the export is whole.
type exportWriter struct {
	buf  *bufio.Writer
	out  *countingWriter
	hash hash.Hash
	gz   *gzip.Writer
	seen *cidDedupe
	pins int
}

func newExportWriter(w io.Writer, size dedupeSize) *exportWriter {
	h := sha256.New()
	out := &countingWriter{w: io.MultiWriter(w, h)}
	buf := bufio.NewWriterSize(out, 256<<10)
	return &exportWriter{buf: buf, out: out, hash: h, gz: gzip.NewWriter(buf), seen: newCIDDedupe(size)}
}

var newline = []byte{'\n'}

// add writes one pin object unless its CID was certainly written already.
func (w *exportWriter) add(cid string, raw []byte) error {
	if w.seen.add(cid) == seenRepeat {
		return nil
	}
	return w.write(cid, raw)
}

// write writes one pin object. An object spread over several lines (a pretty-printed array) is compacted, since
// `state import` reads one object per line.
func (w *exportWriter) write(cid string, raw []byte) error {
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
	w := newExportWriter(p, s.dedupe)
	if err := fill(w.add); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	if err := w.close(); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	p2, w2, err := s.dropRepeats(ctx, p, w)
	if err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	if p2 != nil {
		defer p2.abort()
		p, w = p2, w2
	}
	if err := p.commit(); err != nil {
		return nil, fmt.Errorf("storing %s backup %s: %w", kind, id, err)
	}
	m.Pins, m.Size, m.SHA256 = w.pins, w.out.n, hex.EncodeToString(w.hash.Sum(nil))
	return s.finish(m)
}

// dropRepeats settles the suspects of a written export: it re-reads the pending file and, only if some CID
// really occurs twice, writes a second pending file without the later occurrences, which replaces the first. It
// returns nil, nil when the written file stands as it is.
func (s *Store) dropRepeats(ctx context.Context, p *pendingFile, w *exportWriter) (*pendingFile, *exportWriter, error) {
	if len(w.seen.suspects) == 0 {
		return nil, nil, nil
	}
	s.log.Info("re-reading a new export to check pins that may be repeated", zap.Int("suspects", len(w.seen.suspects)))
	open := func() (io.ReadCloser, error) { return openExport(p.f.Name()) }
	counts, err := readOccurrences(ctx, open, w.seen)
	if err != nil {
		return nil, nil, err
	}
	repeated := map[string]bool{} // a repeated CID -> whether its first occurrence was copied
	for cid, n := range counts {
		if n > 1 {
			repeated[cid] = false
		}
	}
	if len(repeated) == 0 {
		return nil, nil, nil
	}
	p2, err := createPending(p.final)
	if err != nil {
		return nil, nil, err
	}
	w2 := newExportWriter(p2, s.dedupe)
	err = copyExport(ctx, open, func(cid string, raw []byte) error {
		if copied, ok := repeated[cid]; ok {
			if copied {
				return nil
			}
			repeated[cid] = true
		}
		return w2.write(cid, raw)
	})
	if err == nil {
		err = w2.close()
	}
	if err != nil {
		p2.abort()
		return nil, nil, fmt.Errorf("rewriting the export without its repeated pins: %w", err)
	}
	return p2, w2, nil
}

func readOccurrences(ctx context.Context, open func() (io.ReadCloser, error), d *cidDedupe) (map[string]int, error) {
	r, err := open()
	if err != nil {
		return nil, fmt.Errorf("re-reading the export: %w", err)
	}
	defer r.Close()
	return d.occurrences(ctxReader{ctx: ctx, r: r})
}

func copyExport(ctx context.Context, open func() (io.ReadCloser, error), fn func(cid string, raw []byte) error) error {
	r, err := open()
	if err != nil {
		return fmt.Errorf("re-reading the export: %w", err)
	}
	defer r.Close()
	return forEachPin(ctxReader{ctx: ctx, r: r}, fn)
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
		return checkExport(m, s.dedupe, r, buf, s.reopenStored(ctx, m))
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

// checkExport decompresses a stored export, copying it to out, and checks its distinct pin count against the
// manifest; reopen gives the decompressed export again when suspects need a second read (dedupe.go).
func checkExport(m *Manifest, size dedupeSize, stored io.Reader, out io.Writer, reopen func() (io.ReadCloser, error)) error {
	gz, err := gzip.NewReader(stored)
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	content := io.TeeReader(gz, out)
	d := newCIDDedupe(size)
	total, repeats, err := countFirstRead(content, d)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, content); err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	n := total - repeats
	if n >= m.Pins && len(d.suspects) > 0 { // fewer could not become the count by dropping repeats
		more, err := d.repeats(reopen)
		if err != nil {
			return err
		}
		n -= more
	}
	if n != m.Pins {
		return fmt.Errorf("%w: backup %s holds %d pins, its manifest says %d", ErrCountMismatch, m.ID, n, m.Pins)
	}
	return nil
}

// reopenStored gives the decompressed content of m's stored file, for a second read.
func (s *Store) reopenStored(ctx context.Context, m *Manifest) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(s.path(m.File))
		if err != nil {
			return nil, err
		}
		gz, err := gzip.NewReader(ctxReader{ctx: ctx, r: bufio.NewReaderSize(f, 64<<10)})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("decompressing: %w", err)
		}
		return readCloser{Reader: gz, Closer: f}, nil
	}
}
