package binstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/upgraded/upgraded/internal/atomicfile"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// A version number alone does not say which bytes a host runs: a release can
// be rebuilt, and a plan that failed leaves its binaries installed under the
// version it announced. So the store remembers, for each version it staged,
// the sha256 of the artifacts it was unpacked from (DIR/origins/<version>.json),
// and a plan reuses an installed version only when it announced exactly those
// artifacts.

type origin struct {
	Artifacts []string `json:"artifacts"` // sha256 hex, lower case, sorted
}

func (s *Store) originPath(version string) string {
	return filepath.Join(s.dir, originsDir, version+".json")
}

// NormalizeDigests returns the digests in the form Origin compares: lower case, sorted.
func NormalizeDigests(digests []string) []string {
	out := make([]string, len(digests))
	for i, d := range digests {
		out[i] = strings.ToLower(strings.TrimSpace(d))
	}
	slices.Sort(out)
	return out
}

// Origin returns the sha256 of the artifacts version was installed from
// (sorted), or nil when the store does not know them: a version imported from
// the host's own binaries, or one installed before origins were recorded.
func (s *Store) Origin(version string) ([]string, error) {
	if !validVersion(version) {
		return nil, fmt.Errorf("reading the origin of version %q: not a usable version name", version)
	}
	data, err := os.ReadFile(s.originPath(version))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the origin of version %s: %w", version, err)
	}
	var o origin
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("reading the origin of version %s: %w", version, err)
	}
	return o.Artifacts, nil
}

// SetOrigin records the artifacts an installed version came from (atomically:
// temporary file, sync, rename).
func (s *Store) SetOrigin(version string, digests []string) error {
	if !s.Has(version) {
		return fmt.Errorf("recording the origin of version %s: not installed", version)
	}
	data, err := json.Marshal(origin{Artifacts: NormalizeDigests(digests)})
	if err != nil {
		return err
	}
	dir := filepath.Join(s.dir, originsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("recording the origin of version %s: %w", version, err)
	}
	if err := atomicfile.Write(s.originPath(version), data); err != nil {
		return fmt.Errorf("recording the origin of version %s: %w", version, err)
	}
	return nil
}

// Replace installs other bytes under a version already installed, which must
// not be the current one (the running peer's binary is never rewritten). The
// new folder is complete before it takes the version's name; its recorded
// origin is dropped until SetOrigin records the new one.
func (s *Store) Replace(version string, b stage.Binaries) error {
	if cur, err := s.Current(); err == nil && cur == version {
		return fmt.Errorf("replacing version %s: it is the current version, which the peer runs", version)
	}
	if err := os.Remove(s.originPath(version)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replacing version %s: %w", version, err)
	}
	final := s.versionDir(version)
	doomed := filepath.Join(s.dir, versionsDir, "."+version+".replaced")
	if err := os.RemoveAll(doomed); err != nil {
		return fmt.Errorf("replacing version %s: %w", version, err)
	}
	if err := os.Rename(final, doomed); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replacing version %s: %w", version, err)
	}
	if err := s.install(version, b); err != nil {
		// Put the old bytes back under their name rather than leave none.
		if rerr := os.Rename(doomed, final); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("replacing version %s: %w", version, err)
	}
	if err := os.RemoveAll(doomed); err != nil {
		return fmt.Errorf("replacing version %s: removing the old copy: %w", version, err)
	}
	return nil
}
