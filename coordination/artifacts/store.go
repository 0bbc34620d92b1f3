package artifacts

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Store is the index of the artifacts this daemon holds and may serve. A file
// enters it only once its sha256 was verified and it was renamed into place
// (by the Sharer), so a partial or unverified file is never served; the file
// is served only while it is unchanged since (same size and modification
// time), and it leaves the index when it is removed (plan cleanup). The index
// lives in memory: after a restart a daemon serves what it fetches anew.
type Store struct {
	mu       sync.Mutex
	held     map[string]heldFile // sha256 (lower-case hex) -> file
	fetching map[string]int      // sha256 -> fetches from the source under way
	wanted   map[string]int      // sha256 -> fetches of this daemon under way, from any side
	failed   map[string]string   // sha256 -> why this daemon's fetch from the source failed
	changed  chan struct{}       // closed and replaced at every change
}

type heldFile struct {
	path string
	size int64
	mod  time.Time
}

// NewStore returns an empty index.
func NewStore() *Store {
	return &Store{held: map[string]heldFile{}, fetching: map[string]int{}, wanted: map[string]int{},
		failed: map[string]string{}, changed: make(chan struct{})}
}

// changedLocked wakes every watcher; s.mu is held.
func (s *Store) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// watch returns a channel closed at the next change of the index.
func (s *Store) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// beginWant marks a fetch of this daemon under way (from peers or the
// source); the function returned ends it. A server holds a waiting request
// for a wanted artifact longer than for one this daemon is not fetching.
func (s *Store) beginWant(sha string) func() {
	k := key(sha)
	s.mu.Lock()
	s.wanted[k]++
	s.changedLocked()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.wanted[k]--; s.wanted[k] <= 0 {
			delete(s.wanted, k)
		}
		s.changedLocked()
	}
}

// isWanted says whether this daemon is fetching the artifact now.
func (s *Store) isWanted(sha string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wanted[key(sha)] > 0
}

// status is what this daemon can say about one artifact.
type status int

const (
	statusNotHeld status = iota
	statusHeld
	statusFetching // being fetched from its source here now
	statusFailed   // this daemon's fetch from the source failed
)

// add records a verified file.
func (s *Store) add(sha, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("recording the verified artifact %s: %w", path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[key(sha)] = heldFile{path: path, size: fi.Size(), mod: fi.ModTime()}
	delete(s.failed, key(sha))
	s.changedLocked()
	return nil
}

// beginSource marks a fetch from the source under way; the function returned ends it.
func (s *Store) beginSource(sha string) func(err error) {
	k := key(sha)
	s.mu.Lock()
	s.fetching[k]++
	delete(s.failed, k)
	s.changedLocked()
	s.mu.Unlock()
	return func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fetching[k]--; s.fetching[k] <= 0 {
			delete(s.fetching, k)
		}
		if err != nil {
			s.failed[k] = err.Error()
		}
		s.changedLocked()
	}
}

// status says whether the artifact is held, being fetched, or failed here.
func (s *Store) status(sha string) (status, string) {
	k := key(sha)
	s.mu.Lock()
	_, held := s.held[k]
	n, why := s.fetching[k], s.failed[k]
	s.mu.Unlock()
	switch {
	case held:
		return statusHeld, ""
	case n > 0:
		return statusFetching, ""
	case why != "":
		return statusFailed, why
	}
	return statusNotHeld, ""
}

// errNotHeld is returned by open for an artifact not (or no longer) held.
var errNotHeld = errors.New("artifact not held")

// open returns the held file, checked unchanged since it was verified. A
// file gone or changed is dropped from the index and never served.
func (s *Store) open(sha string) (*os.File, int64, error) {
	k := key(sha)
	s.mu.Lock()
	h, ok := s.held[k]
	s.mu.Unlock()
	if !ok {
		return nil, 0, errNotHeld
	}
	f, err := os.Open(h.path)
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && (!fi.Mode().IsRegular() || fi.Size() != h.size || !fi.ModTime().Equal(h.mod)) {
			err = fmt.Errorf("%s changed since it was verified", h.path)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		s.mu.Lock()
		if cur, ok := s.held[k]; ok && cur == h {
			delete(s.held, k)
		}
		s.mu.Unlock()
		return nil, 0, fmt.Errorf("%w: %v", errNotHeld, err)
	}
	return f, h.size, nil
}

func key(sha string) string { return strings.ToLower(strings.TrimSpace(sha)) }
