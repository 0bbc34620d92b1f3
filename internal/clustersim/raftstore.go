package clustersim

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// raftStore keeps the raft folder like the real one: every applied change is
// a log entry in raft/raft.db (a bolt file), and raft/snapshots/ holds a full
// copy of the state taken every `threshold` entries and at clean shutdown.
// Offline tools (state export) read only the newest snapshot, never the log:
// that is the trap being reproduced.
type raftStore struct {
	dir       string
	db        *bolt.DB
	log       *zap.Logger
	threshold int
	lastIndex uint64
	sinceSnap int
	// confPending is the log index of a membership change applied since the
	// last snapshot; the shutdown snapshot then fails, as in the reference.
	confPending uint64
	cur         map[string]Entry
	membership  *Membership
	epoch       string
}

var (
	bucketLogs = []byte("logs")
	bucketMeta = []byte("meta")
)

type snapMeta struct {
	Index      uint64      `json:"index"`
	Term       uint64      `json:"term"`
	Epoch      string      `json:"epoch"`
	Membership *Membership `json:"configuration,omitempty"`
	Size       int         `json:"size"`
}

func snapshotsDir(raftDir string) string { return filepath.Join(raftDir, "snapshots") }

// openRaftStore opens (creating) raftDir and replays snapshot and log.
func openRaftStore(raftDir string, threshold int, log *zap.Logger) (*raftStore, loadedState, error) {
	if err := os.MkdirAll(snapshotsDir(raftDir), 0o755); err != nil {
		return nil, loadedState{}, fmt.Errorf("creating raft folder: %w", err)
	}
	db, err := bolt.Open(filepath.Join(raftDir, "raft.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, loadedState{}, fmt.Errorf("opening raft log: %w", err)
	}
	s := &raftStore{dir: raftDir, db: db, log: log, threshold: threshold, cur: map[string]Entry{}}
	ls, err := s.replay()
	if err != nil {
		db.Close()
		return nil, ls, err
	}
	return s, ls, nil
}

func (s *raftStore) replay() (loadedState, error) {
	meta, snapEntries, err := readNewestSnapshot(s.dir)
	if err != nil {
		return loadedState{}, err
	}
	s.lastIndex, s.membership, s.epoch = meta.Index, meta.Membership, meta.Epoch
	s.cur = reduce(snapEntries)
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketLogs)
		if err != nil {
			return err
		}
		mb, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if e := mb.Get([]byte("epoch")); e != nil {
			s.epoch = string(e)
		} else {
			if s.epoch == "" {
				s.epoch = newEpoch()
			}
			if err := mb.Put([]byte("epoch"), []byte(s.epoch)); err != nil {
				return err
			}
		}
		c := b.Cursor()
		for k, v := c.Seek(indexKey(meta.Index + 1)); k != nil; k, v = c.Next() {
			var rec logRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("log entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			s.applyRec(rec)
			s.lastIndex = binary.BigEndian.Uint64(k)
			if rec.Entry != nil {
				s.sinceSnap++
			}
		}
		return nil
	})
	if err != nil {
		return loadedState{}, fmt.Errorf("replaying raft log: %w", err)
	}
	return loadedState{Epoch: s.epoch, Entries: sortedValues(s.cur), Membership: s.membership}, nil
}

func (s *raftStore) applyRec(rec logRecord) {
	if rec.Entry != nil {
		if old, ok := s.cur[rec.Entry.CID]; !ok || rec.Entry.newer(old) {
			s.cur[rec.Entry.CID] = *rec.Entry
		}
	}
	if rec.Membership != nil {
		s.membership = rec.Membership
	}
}

func indexKey(i uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, i)
	return k
}

func (s *raftStore) Append(entries []Entry, m *Membership) error {
	recs := make([]logRecord, 0, len(entries)+1)
	for i := range entries {
		recs = append(recs, logRecord{Entry: &entries[i]})
	}
	if m != nil {
		recs = append(recs, logRecord{Membership: m})
	}
	first := s.lastIndex + 1
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for i, rec := range recs {
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put(indexKey(first+uint64(i)), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("appending to raft log: %w", err)
	}
	for i, rec := range recs {
		if rec.Membership != nil && s.membership != nil && len(s.membership.Peers) > 0 {
			s.confPending = first + uint64(i)
		}
		s.applyRec(rec)
		s.lastIndex++
		if rec.Entry == nil {
			continue // configuration entries do not reach the FSM
		}
		s.sinceSnap++
		if s.sinceSnap >= s.threshold {
			if err := s.snapshot(); err != nil {
				return err
			}
		}
	}
	return nil
}

// snapshot writes the whole current state as a new snapshot folder.
func (s *raftStore) snapshot() error {
	meta := snapMeta{Index: s.lastIndex, Term: 1, Epoch: s.epoch, Membership: s.membership, Size: len(s.cur)}
	if err := writeRaftSnapshot(s.dir, meta, sortedValues(s.cur)); err != nil {
		return err
	}
	s.log.Info("snapshot complete", zap.Uint64("index", s.lastIndex), zap.Int("pins", len(liveOf(s.cur))))
	s.sinceSnap, s.confPending = 0, 0
	return nil
}

// Close takes the shutdown snapshot unless a membership change is still
// pending, which fails it the way hashicorp/raft does.
func (s *raftStore) Close() error {
	defer s.db.Close()
	switch {
	case s.confPending != 0:
		s.log.Error(fmt.Sprintf("failed to take snapshot: cannot take snapshot now, wait until the configuration entry at %d has been applied", s.confPending))
	case s.sinceSnap > 0:
		if err := s.snapshot(); err != nil {
			return fmt.Errorf("taking shutdown snapshot: %w", err)
		}
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing raft log: %w", err)
	}
	return nil
}

// writeRaftSnapshot writes snapshots/<term>-<index>-<ms>/ through a temp
// folder and keeps the two newest snapshots.
func writeRaftSnapshot(raftDir string, meta snapMeta, entries []Entry) error {
	root := snapshotsDir(raftDir)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("creating snapshots folder: %w", err)
	}
	name := fmt.Sprintf("%d-%d-%d", meta.Term, meta.Index, time.Now().UnixMilli())
	tmp := filepath.Join(root, name+".tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("creating snapshot folder: %w", err)
	}
	err := writeAtomic(filepath.Join(tmp, "state.bin"), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for i := range entries {
			if err := enc.Encode(entries[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = writeAtomic(filepath.Join(tmp, "meta.json"), func(w io.Writer) error {
			return json.NewEncoder(w).Encode(meta)
		})
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(root, name))
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("writing raft snapshot: %w", err)
	}
	return pruneSnapshots(root, 2)
}

type snapDir struct {
	name  string
	index uint64
}

func listSnapshots(root string) []snapDir {
	des, _ := os.ReadDir(root)
	var out []snapDir
	for _, de := range des {
		parts := strings.Split(de.Name(), "-")
		if !de.IsDir() || len(parts) != 3 {
			continue
		}
		idx, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, snapDir{de.Name(), idx})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].index != out[j].index {
			return out[i].index < out[j].index
		}
		return out[i].name < out[j].name
	})
	return out
}

func pruneSnapshots(root string, keep int) error {
	snaps := listSnapshots(root)
	for len(snaps) > keep {
		if err := os.RemoveAll(filepath.Join(root, snaps[0].name)); err != nil {
			return fmt.Errorf("removing old snapshot: %w", err)
		}
		snaps = snaps[1:]
	}
	return nil
}

// readNewestSnapshot reads the newest snapshot; none reads as empty.
func readNewestSnapshot(raftDir string) (snapMeta, []Entry, error) {
	snaps := listSnapshots(snapshotsDir(raftDir))
	if len(snaps) == 0 {
		return snapMeta{}, nil, nil
	}
	dir := filepath.Join(snapshotsDir(raftDir), snaps[len(snaps)-1].name)
	var meta snapMeta
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return meta, nil, fmt.Errorf("reading snapshot metadata: %w", err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, nil, fmt.Errorf("parsing snapshot metadata: %w", err)
	}
	f, err := os.Open(filepath.Join(dir, "state.bin"))
	if err != nil {
		return meta, nil, fmt.Errorf("opening snapshot: %w", err)
	}
	defer f.Close()
	var entries []Entry
	dec := json.NewDecoder(f)
	for {
		var e Entry
		if err := dec.Decode(&e); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return meta, nil, fmt.Errorf("reading snapshot: %w", err)
		}
		entries = append(entries, e)
	}
	return meta, entries, nil
}

// importRaftState replaces the raft state by entries: the log is emptied and
// a snapshot holding them (and the last known membership) is written, so the
// next start loads exactly them.
func importRaftState(raftDir string, entries []Entry, log *zap.Logger) error {
	s, _, err := openRaftStore(raftDir, 1<<30, log)
	if err != nil {
		return err
	}
	meta := snapMeta{Index: s.lastIndex + 1, Term: 1, Epoch: newEpoch(), Membership: s.membership, Size: len(entries)}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketLogs); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketLogs); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put([]byte("epoch"), []byte(meta.Epoch))
	})
	s.db.Close()
	if err != nil {
		return fmt.Errorf("emptying raft log: %w", err)
	}
	if err := writeRaftSnapshot(raftDir, meta, entries); err != nil {
		return err
	}
	return pruneSnapshots(snapshotsDir(raftDir), 1)
}
