// Package statebackup keeps copies of an IPFS Cluster peer's pinset that can be proven good: live exports taken
// from the REST API while the peer runs, `state export` files made offline, and archives of whole state folders
// (raft/, raft.old.N, pebble/, badger/). Each copy is one data file plus a JSON manifest written after it, so a copy
// without a manifest is never mistaken for a backup.
package statebackup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Kind says what a backup holds and therefore how it is verified and restored.
type Kind string

const (
	// KindLiveExport is the pinset streamed from a running peer's REST API, in `state export` format.
	KindLiveExport Kind = "live-export"
	// KindOfflineExport is a `state export` file written by ipfs-cluster-service while the peer was stopped.
	KindOfflineExport Kind = "offline-export"
	// KindStateFolder is a tar+gzip archive of a whole state folder, taken while the peer was stopped.
	KindStateFolder Kind = "state-folder"
)

// isExport reports whether backups of this kind hold pin objects that can be counted and imported.
func (k Kind) isExport() bool { return k == KindLiveExport || k == KindOfflineExport }

func (k Kind) valid() bool { return k.isExport() || k == KindStateFolder }

// Errors callers branch on. Each is returned wrapped with the backup and the detail.
var (
	// ErrChecksum means the stored file's bytes are not the ones the manifest recorded (changed, truncated).
	ErrChecksum = errors.New("backup file does not match its recorded checksum")
	// ErrCountMismatch means the stored export holds a different number of pins than the manifest recorded.
	ErrCountMismatch = errors.New("backup pin count does not match its manifest")
	// ErrMissing means the manifest exists but the file it describes is gone.
	ErrMissing = errors.New("backup file is missing")
	// ErrNotFound means there is no backup with that ID.
	ErrNotFound = errors.New("no such backup")
)

// manifestFormat is written into every manifest so a later upgraded can tell old manifests from new ones.
const manifestFormat = 1

// Meta is what the caller knows about the peer the backup comes from.
type Meta struct {
	ClusterVersion string
	PeerID         string
	PlanID         string
	Consensus      string
	Note           string
}

// Manifest describes one stored backup. It is written as <ID>.json beside the data file, after the data file is
// safely on disk.
type Manifest struct {
	Format         int    `json:"format"`
	ID             string `json:"id"`
	Kind           Kind   `json:"kind"`
	ClusterVersion string `json:"cluster_version"`
	PeerID         string `json:"peer_id"`
	PlanID         string `json:"plan_id,omitempty"`
	Consensus      string `json:"consensus"`
	Note           string `json:"note,omitempty"`
	// Source is where an added export or a copied folder was read from.
	Source string `json:"source,omitempty"`
	// Pins is the number of distinct pins in the content; -1 for a state-folder copy, whose count is unknown.
	Pins int `json:"pins"`
	// SHA256 and Size are of the stored file's bytes (compressed), hex-encoded.
	SHA256  string    `json:"sha256"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	// File is the data file's name inside the store folder.
	File string `json:"file"`
	// Folder is, for a state-folder copy, the name of the folder that was copied ("raft", "raft.old.2", "pebble").
	Folder string `json:"folder,omitempty"`
}

// Option changes how a Store is opened.
type Option func(*Store)

// WithClock makes the store read time from now instead of the system clock (IDs, Created, restore names).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// Store is a folder of backups. Its methods are safe to use from several goroutines; several processes may share
// the folder too, since every file appears by an atomic rename.
type Store struct {
	dir string
	log *zap.Logger
	now func() time.Time
	// dedupe sizes the search for repeated CIDs (dedupe.go); tests shrink it.
	dedupe dedupeSize

	mu       sync.Mutex
	reserved map[string]struct{} // IDs being written by this process
}

// Open opens (creating if needed) the backup folder dir.
func Open(dir string, log *zap.Logger, opts ...Option) (*Store, error) {
	if dir == "" {
		return nil, errors.New("opening backup store: no folder given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening backup store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("creating backup store %s: %w", abs, err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Store{dir: abs, log: log.Named("statebackup"), now: time.Now, dedupe: defaultDedupe,
		reserved: map[string]struct{}{}}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

// Get returns the manifest of backup id.
func (s *Store) Get(id string) (*Manifest, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: %q is not a backup ID", ErrNotFound, id)
	}
	m, err := s.readManifest(id + manifestExt)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return m, err
}

// List returns every backup with a readable manifest, newest first. Data files without a manifest (left by a crash
// between the two writes) are not backups and are ignored; CleanLeftovers removes them.
func (s *Store) List() ([]*Manifest, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("listing backups in %s: %w", s.dir, err)
	}
	var out []*Manifest
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, manifestExt) || strings.HasPrefix(name, ".") {
			continue
		}
		m, err := s.readManifest(name)
		if err != nil {
			s.log.Warn("ignoring an unreadable backup manifest", zap.String("file", name), zap.Error(err))
			continue
		}
		out = append(out, m)
	}
	sortNewestFirst(out)
	return out, nil
}

func sortNewestFirst(ms []*Manifest) {
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].Created.Equal(ms[j].Created) {
			return ms[i].Created.After(ms[j].Created)
		}
		return ms[i].ID > ms[j].ID
	})
}

// Prune keeps the newest keep backups plus every backup whose PlanID is in keepPlans, and removes the rest. It
// returns the manifests of what it removed. The manifest goes first, so a half-pruned backup is a leftover, not a
// backup that fails to verify.
func (s *Store) Prune(keep int, keepPlans []string) ([]*Manifest, error) {
	if keep < 0 {
		return nil, fmt.Errorf("pruning backups: cannot keep %d", keep)
	}
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var removed []*Manifest
	for i, m := range all {
		if i < keep || (m.PlanID != "" && contains(keepPlans, m.PlanID)) {
			continue
		}
		if err := s.remove(m); err != nil {
			return removed, err
		}
		s.log.Info("removed an old backup", zap.String("id", m.ID), zap.String("kind", string(m.Kind)),
			zap.String("plan", m.PlanID), zap.Time("created", m.Created))
		removed = append(removed, m)
	}
	return removed, nil
}

func (s *Store) remove(m *Manifest) error {
	if err := os.Remove(s.path(m.ID + manifestExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing backup %s: %w", m.ID, err)
	}
	if err := os.Remove(s.path(m.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing backup %s data file %s: %w", m.ID, m.File, err)
	}
	return syncDir(s.dir)
}

// CleanLeftovers removes what crashed writes left behind: temporary files, and data files whose manifest was
// never written. Only files older than minAge are touched, so a backup another process is writing right now
// survives. It returns the names removed.
func (s *Store) CleanLeftovers(minAge time.Duration) ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("looking for leftovers in %s: %w", s.dir, err)
	}
	cutoff := s.now().Add(-minAge)
	var removed []string
	for _, e := range entries {
		if !s.isLeftover(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		if err := os.RemoveAll(s.path(e.Name())); err != nil {
			return removed, fmt.Errorf("removing leftover %s: %w", e.Name(), err)
		}
		s.log.Info("removed a leftover of an interrupted backup", zap.String("file", e.Name()))
		removed = append(removed, e.Name())
	}
	return removed, nil
}

func (s *Store) isLeftover(name string) bool {
	if strings.HasPrefix(name, tempPrefix) {
		return true
	}
	for _, ext := range []string{exportExt, archiveExt} {
		if id, ok := strings.CutSuffix(name, ext); ok {
			s.mu.Lock()
			_, writing := s.reserved[id]
			s.mu.Unlock()
			_, err := os.Lstat(s.path(id + manifestExt))
			return !writing && errors.Is(err, fs.ErrNotExist)
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

const (
	manifestExt = ".json"
	exportExt   = ".ndjson.gz"
	archiveExt  = ".tar.gz"
	tempPrefix  = ".tmp-"
)

func (s *Store) path(name string) string { return filepath.Join(s.dir, name) }

// newID reserves a fresh backup ID; release it once the manifest is written (or the attempt failed). IDs sort by
// time and say what they hold, e.g. 20260124T113508.123456789Z-live or ...Z-folder-raft.old.2.
func (s *Store) newID(kind Kind, folder string) (string, time.Time) {
	now := s.now().UTC()
	base := now.Format("20060102T150405.000000000Z") + "-" + idTag(kind, folder)
	s.mu.Lock()
	defer s.mu.Unlock()
	id := base
	for n := 2; s.taken(id); n++ {
		id = fmt.Sprintf("%s-%d", base, n)
	}
	s.reserved[id] = struct{}{}
	return id, now
}

func (s *Store) taken(id string) bool {
	if _, ok := s.reserved[id]; ok {
		return true
	}
	for _, ext := range []string{manifestExt, exportExt, archiveExt} {
		if _, err := os.Lstat(s.path(id + ext)); err == nil {
			return true
		}
	}
	return false
}

func (s *Store) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, id)
}

func idTag(kind Kind, folder string) string {
	switch kind {
	case KindLiveExport:
		return "live"
	case KindOfflineExport:
		return "offline"
	}
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, folder)
	return "folder-" + strings.TrimLeft(clean, ".")
}

// validID accepts only names this package could have made, so an ID from the command line can never reach
// outside the store folder.
func validID(id string) bool {
	if id == "" || strings.HasPrefix(id, ".") || len(id) > 200 {
		return false
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

func (s *Store) readManifest(name string) (*Manifest, error) {
	data, err := os.ReadFile(s.path(name))
	if err != nil {
		return nil, fmt.Errorf("reading backup manifest %s: %w", name, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("reading backup manifest %s: %w", name, err)
	}
	if err := m.check(strings.TrimSuffix(name, manifestExt)); err != nil {
		return nil, fmt.Errorf("reading backup manifest %s: %w", name, err)
	}
	return &m, nil
}

// check refuses manifests that could make Verify or a restore read a file outside the store.
func (m *Manifest) check(id string) error {
	switch {
	case m.ID != id:
		return fmt.Errorf("manifest names backup %q", m.ID)
	case !m.Kind.valid():
		return fmt.Errorf("unknown backup kind %q", m.Kind)
	case !validID(m.File) || !strings.HasPrefix(m.File, m.ID):
		return fmt.Errorf("data file name %q is not this backup's", m.File)
	}
	return nil
}

// writeManifest is the last step of every backup: once it is renamed into place, the backup exists.
func (s *Store) writeManifest(m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding manifest of backup %s: %w", m.ID, err)
	}
	if err := writeFileAtomic(s.path(m.ID+manifestExt), append(data, '\n')); err != nil {
		return fmt.Errorf("writing manifest of backup %s: %w", m.ID, err)
	}
	return nil
}

// finish writes the manifest of a data file already renamed into place, removing the data file if that fails so
// no orphan is left.
func (s *Store) finish(m *Manifest) (*Manifest, error) {
	if err := s.writeManifest(m); err != nil {
		_ = os.Remove(s.path(m.File))
		return nil, err
	}
	s.log.Info("backup stored", zap.String("id", m.ID), zap.String("kind", string(m.Kind)), zap.Int("pins", m.Pins),
		zap.Int64("bytes", m.Size), zap.String("plan", m.PlanID), zap.String("peer", m.PeerID))
	return m, nil
}

func newManifest(id string, kind Kind, created time.Time, meta Meta) *Manifest {
	return &Manifest{
		Format: manifestFormat, ID: id, Kind: kind, Created: created,
		ClusterVersion: meta.ClusterVersion, PeerID: meta.PeerID, PlanID: meta.PlanID,
		Consensus: meta.Consensus, Note: meta.Note,
	}
}
