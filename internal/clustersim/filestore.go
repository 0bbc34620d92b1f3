package clustersim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// fileStore keeps a crdt datastore folder: a snapshot (pins.snapshot, its
// first line a header) rewritten whole with temp+fsync+rename, and an
// append-only log (pins.log) fsynced on every append. Loading reads the
// snapshot then the log; a torn last log line (crash mid-write) is ignored.
type fileStore struct {
	dir   string
	epoch string
	log   *os.File
}

type fileHeader struct {
	Format string `json:"format"`
	Epoch  string `json:"epoch"`
}

type logRecord struct {
	Entry      *Entry      `json:"e,omitempty"`
	Membership *Membership `json:"m,omitempty"`
}

const fileStoreFormat = "clustersim-datastore-1"

// readFileStore loads a datastore folder without opening it for writing.
// A missing folder reads as an empty state.
func readFileStore(dir string) (loadedState, error) {
	var ls loadedState
	f, err := os.Open(filepath.Join(dir, "pins.snapshot"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return ls, fmt.Errorf("opening datastore snapshot: %w", err)
	default:
		defer f.Close()
		if err := readRecords(f, &ls, true); err != nil {
			return ls, fmt.Errorf("reading datastore snapshot %s: %w", f.Name(), err)
		}
	}
	lf, err := os.Open(filepath.Join(dir, "pins.log"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return ls, fmt.Errorf("opening datastore log: %w", err)
	default:
		defer lf.Close()
		if err := readRecords(lf, &ls, false); err != nil {
			return ls, fmt.Errorf("reading datastore log %s: %w", lf.Name(), err)
		}
	}
	return ls, nil
}

func readRecords(r io.Reader, ls *loadedState, header bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		if header {
			header = false
			var h fileHeader
			if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != fileStoreFormat {
				return fmt.Errorf("unknown datastore format")
			}
			ls.Epoch = h.Epoch
			continue
		}
		var rec logRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			// Only the last line can be torn by a crash; stop there.
			return nil
		}
		if rec.Entry != nil {
			ls.Entries = append(ls.Entries, *rec.Entry)
		}
		if rec.Membership != nil {
			ls.Membership = rec.Membership
		}
	}
	return sc.Err()
}

// openFileStore loads dir (creating it) and compacts it, ready for appends.
func openFileStore(dir string) (*fileStore, loadedState, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, loadedState{}, fmt.Errorf("creating datastore folder: %w", err)
	}
	ls, err := readFileStore(dir)
	if err != nil {
		return nil, ls, err
	}
	if ls.Epoch == "" {
		ls.Epoch = newEpoch()
	}
	ls.Entries = sortedValues(reduce(ls.Entries))
	if err := writeFileSnapshot(dir, ls); err != nil {
		return nil, ls, err
	}
	lf, err := os.OpenFile(filepath.Join(dir, "pins.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, ls, fmt.Errorf("opening datastore log: %w", err)
	}
	return &fileStore{dir: dir, epoch: ls.Epoch, log: lf}, ls, nil
}

func sortedValues(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sortEntriesBySeq(out)
	return out
}

// writeFileSnapshot replaces dir/pins.snapshot atomically.
func writeFileSnapshot(dir string, ls loadedState) error {
	return writeAtomic(filepath.Join(dir, "pins.snapshot"), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		if err := enc.Encode(fileHeader{Format: fileStoreFormat, Epoch: ls.Epoch}); err != nil {
			return err
		}
		for i := range ls.Entries {
			if err := enc.Encode(logRecord{Entry: &ls.Entries[i]}); err != nil {
				return err
			}
		}
		if ls.Membership != nil {
			return enc.Encode(logRecord{Membership: ls.Membership})
		}
		return nil
	})
}

func (s *fileStore) Append(entries []Entry, m *Membership) error {
	w := bufio.NewWriter(s.log)
	enc := json.NewEncoder(w)
	for i := range entries {
		if err := enc.Encode(logRecord{Entry: &entries[i]}); err != nil {
			return fmt.Errorf("writing datastore log: %w", err)
		}
	}
	if m != nil {
		if err := enc.Encode(logRecord{Membership: m}); err != nil {
			return fmt.Errorf("writing datastore log: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing datastore log: %w", err)
	}
	if err := s.log.Sync(); err != nil {
		return fmt.Errorf("syncing datastore log: %w", err)
	}
	return nil
}

// Close compacts the log into the snapshot.
func (s *fileStore) Close() error {
	if err := s.log.Close(); err != nil {
		return fmt.Errorf("closing datastore log: %w", err)
	}
	ls, err := readFileStore(s.dir)
	if err != nil {
		return err
	}
	ls.Entries = sortedValues(reduce(ls.Entries))
	if err := writeFileSnapshot(s.dir, ls); err != nil {
		return err
	}
	return os.Truncate(filepath.Join(s.dir, "pins.log"), 0)
}

// writeAtomic writes path through a temp file: write, fsync, rename, fsync
// the folder, so a crash leaves the old or the new file, never half of one.
func writeAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<16)
	if err := write(bw); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming into %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	return nil
}
