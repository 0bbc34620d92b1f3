// Package binstore keeps the cluster binaries of every version staged on this
// host inside upgraded's own folder, and switches between them atomically:
//
//	DIR/versions/<version>/{ipfs-cluster-service,ipfs-cluster-ctl}
//	DIR/current  -> versions/<version>
//	DIR/previous -> versions/<old version>
//
// Runners and units use ServicePath (DIR/current/ipfs-cluster-service), so a
// switch of the current link is all a binary swap takes. Nothing is ever
// written into system folders.
package binstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/upgraded/upgraded/sidecar/stage"
)

// ErrNotLinked is returned by Current and Previous when the link does not
// exist yet: a fresh host, before Import or the first Activate.
var ErrNotLinked = errors.New("no version linked")

// ErrOtherContent is returned by Install when the version is already
// installed with other bytes.
var ErrOtherContent = errors.New("already installed with other content")

const (
	versionsDir  = "versions"
	originsDir   = "origins"
	currentLink  = "current"
	previousLink = "previous"
)

// validVersion keeps a version usable as one folder name: no separators, no
// leading dot (which would collide with temporary names).
var versionPattern = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+-]*$`)

// validVersion also refuses the ".tmp" suffix that Install's staging folders use.
func validVersion(v string) bool {
	return versionPattern.MatchString(v) && !strings.HasSuffix(v, ".tmp")
}

// Store is the versions folder of one host. Its methods are not meant to be
// called concurrently with each other; readers of the links may run at any time.
type Store struct {
	dir string
}

// Open prepares (creating if needed) the store in dir.
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening binary store %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, versionsDir), 0o755); err != nil {
		return nil, fmt.Errorf("opening binary store %s: %w", dir, err)
	}
	return &Store{dir: abs}, nil
}

// ServicePath is the stable path of the current service binary.
func (s *Store) ServicePath() string { return filepath.Join(s.dir, currentLink, stage.ServiceName) }

// CtlPath is the stable path of the current ctl binary.
func (s *Store) CtlPath() string { return filepath.Join(s.dir, currentLink, stage.CtlName) }

// ServicePathFor is the service binary of one version, e.g. to run its
// migrations or `--version` before it becomes current.
func (s *Store) ServicePathFor(version string) string {
	return filepath.Join(s.versionDir(version), stage.ServiceName)
}

func (s *Store) versionDir(version string) string {
	return filepath.Join(s.dir, versionsDir, version)
}

// Has tells whether version is installed (its service binary is present).
func (s *Store) Has(version string) bool {
	if !validVersion(version) {
		return false
	}
	fi, err := os.Stat(s.ServicePathFor(version))
	return err == nil && fi.Mode().IsRegular()
}

// Install copies the binaries into versions/<version>. The copy is made in a
// temporary folder and renamed, so a version folder is always complete.
// Installing identical content again is a no-op; different content under an
// installed version is refused, since a version must mean one set of bytes.
func (s *Store) Install(version string, b stage.Binaries) error {
	if err := s.install(version, b); err != nil {
		return fmt.Errorf("installing version %s: %w", version, err)
	}
	return nil
}

// Import adopts the binaries already on the host (e.g. from a package) as
// version, by copying them: the originals may change under a package manager.
// ctlPath may be empty.
func (s *Store) Import(version, servicePath, ctlPath string) error {
	if err := s.install(version, stage.Binaries{Service: servicePath, Ctl: ctlPath}); err != nil {
		return fmt.Errorf("importing %s as version %s: %w", servicePath, version, err)
	}
	return nil
}

func (s *Store) install(version string, b stage.Binaries) error {
	if !validVersion(version) {
		return fmt.Errorf("%q is not a usable version name", version)
	}
	if b.Service == "" {
		return errors.New("no service binary given")
	}
	files := map[string]string{stage.ServiceName: b.Service}
	if b.Ctl != "" {
		files[stage.CtlName] = b.Ctl
	}
	final := s.versionDir(version)
	if _, err := os.Stat(final); err == nil {
		return sameContent(final, files)
	}
	// A fresh folder has no known origin yet, whatever a lost folder left.
	if err := os.Remove(s.originPath(version)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("clearing leftover %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	for name, src := range files {
		if err := copyExecutable(src, filepath.Join(tmp, name)); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return syncDir(filepath.Dir(final))
}

// sameContent accepts a repeated install only if the installed folder holds
// exactly the given files with the same bytes.
func sameContent(dir string, files map[string]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) != len(files) {
		return fmt.Errorf("%w: %d files, want %d", ErrOtherContent, len(entries), len(files))
	}
	for name, src := range files {
		a, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("%w: no %s (%w)", ErrOtherContent, name, err)
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%w: a different %s", ErrOtherContent, name)
		}
	}
	return nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("syncing %s: %w", dst, err)
	}
	return out.Close()
}

// Remove deletes an installed version; it refuses the current and previous
// ones, which a rollback may still need.
func (s *Store) Remove(version string) error {
	if !validVersion(version) {
		return fmt.Errorf("removing version %q: not a usable version name", version)
	}
	for _, link := range []string{currentLink, previousLink} {
		if v, err := s.readLink(link); err == nil && v == version {
			return fmt.Errorf("removing version %s: it is the %s version", version, link)
		}
	}
	// Rename first so that Has never sees a half-deleted folder.
	doomed := filepath.Join(s.dir, versionsDir, "."+version+".removing")
	if err := os.Rename(s.versionDir(version), doomed); err != nil {
		return fmt.Errorf("removing version %s: %w", version, err)
	}
	if err := os.RemoveAll(doomed); err != nil {
		return fmt.Errorf("removing version %s: %w", version, err)
	}
	if err := os.Remove(s.originPath(version)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing version %s: %w", version, err)
	}
	return nil
}

// Current is the version the current link points to.
func (s *Store) Current() (string, error) { return s.readLink(currentLink) }

// Previous is the version the previous link points to.
func (s *Store) Previous() (string, error) { return s.readLink(previousLink) }

func (s *Store) readLink(name string) (string, error) {
	target, err := os.Readlink(filepath.Join(s.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s link: %w", name, ErrNotLinked)
	}
	if err != nil {
		return "", fmt.Errorf("reading %s link: %w", name, err)
	}
	v, ok := strings.CutPrefix(filepath.ToSlash(target), versionsDir+"/")
	if !ok || !validVersion(v) {
		return "", fmt.Errorf("%s link points to %q, not into %s/", name, target, versionsDir)
	}
	return v, nil
}

// Activate makes version current and the old current previous. Each link is
// replaced by rename, so a reader of current always finds a valid link.
// Activating the version that is already current changes nothing (and so
// keeps previous as the rollback target). A rollback is Activate(Previous()).
func (s *Store) Activate(version string) error {
	if !s.Has(version) {
		return fmt.Errorf("activating version %s: not installed", version)
	}
	old, err := s.Current()
	switch {
	case err == nil && old == version:
		return nil
	case err == nil:
		if err := s.setLink(previousLink, old); err != nil {
			return fmt.Errorf("activating version %s: %w", version, err)
		}
	case !errors.Is(err, ErrNotLinked):
		return fmt.Errorf("activating version %s: %w", version, err)
	}
	if err := s.setLink(currentLink, version); err != nil {
		return fmt.Errorf("activating version %s: %w", version, err)
	}
	return nil
}

// setLink points DIR/name at versions/<version> through a temporary link and
// a rename (atomic on POSIX), then syncs the folder so the switch survives a
// power cut.
func (s *Store) setLink(name, version string) error {
	tmp := filepath.Join(s.dir, "."+name+".new")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join(versionsDir, version), tmp); err != nil {
		return fmt.Errorf("creating %s link: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("switching %s link: %w", name, err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
