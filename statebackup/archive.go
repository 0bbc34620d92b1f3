package statebackup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// walkArchive reads a stored state-folder archive, checking every entry, and extracts it into root when root is
// not nil. Refused: names that are absolute, unclean or climb with "..", duplicates, links pointing out of the
// folder, entries lying under a link, and anything but folders, regular files and symbolic links (devices,
// fifos, hard links). Links are created last so no file is ever written through one.
func walkArchive(ctx context.Context, stored io.Reader, root *os.Root) error {
	gz, err := gzip.NewReader(stored)
	if err != nil {
		return fmt.Errorf("decompressing archive: %w", err)
	}
	tr := tar.NewReader(gz)
	seen := map[string]bool{}
	var links, dirs []string
	linkTargets := map[string]string{}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		name, err := localName(hdr.Name)
		if err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("archive entry %q appears twice", name)
		}
		seen[name] = true
		switch hdr.Typeflag {
		case tar.TypeDir:
			dirs = append(dirs, name)
			err = makeDir(root, name, hdr)
		case tar.TypeReg:
			err = writeFile(ctx, root, name, hdr, tr)
		case tar.TypeSymlink:
			links, linkTargets[name] = append(links, name), hdr.Linkname
			err = checkLinkTarget(name, hdr.Linkname)
		default:
			err = fmt.Errorf("archive entry %q is of type %q, which is refused", name, hdr.Typeflag)
		}
		if err != nil {
			return err
		}
	}
	// The gzip trailer holds a CRC of the whole content: read up to it so a damaged archive cannot pass.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("decompressing archive: %w", err)
	}
	if err := checkNothingUnderLinks(seen, linkTargets); err != nil {
		return err
	}
	return finishTree(root, links, linkTargets, dirs)
}

// localName returns an entry's name if it is a clean path inside the folder.
func localName(raw string) (string, error) {
	name := strings.TrimSuffix(raw, "/")
	if name == "" || path.IsAbs(name) || filepath.IsAbs(name) || strings.Contains(name, `\`) ||
		path.Clean(name) != name || !filepath.IsLocal(filepath.FromSlash(name)) {
		return "", fmt.Errorf("archive entry %q is not a plain path inside the folder", raw)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." || part == "." {
			return "", fmt.Errorf("archive entry %q is not a plain path inside the folder", raw)
		}
	}
	return name, nil
}

// checkLinkTarget accepts a symbolic link only if, read from where it sits, it stays inside the folder.
func checkLinkTarget(name, target string) error {
	if target == "" || path.IsAbs(target) || filepath.IsAbs(target) || strings.Contains(target, `\`) {
		return fmt.Errorf("link %q points to %q, outside the folder", name, target)
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("link %q points to %q, outside the folder", name, target)
	}
	return nil
}

// checkNothingUnderLinks refuses an entry below a link of the same archive: "a" -> "." then "a/b" -> ".." looks
// local by name but leaves the folder.
func checkNothingUnderLinks(seen map[string]bool, links map[string]string) error {
	if len(links) == 0 {
		return nil
	}
	for name := range seen {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if _, ok := links[dir]; ok {
				return fmt.Errorf("archive entry %q lies under the link %q", name, dir)
			}
		}
	}
	return nil
}

func makeDir(root *os.Root, name string, hdr *tar.Header) error {
	if root == nil {
		return nil
	}
	if err := root.MkdirAll(name, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	// The owner keeps full access whatever was recorded, or the rest of the folder could not be written.
	return root.Chmod(name, fs.FileMode(hdr.Mode).Perm()|0o700)
}

func writeFile(ctx context.Context, root *os.Root, name string, hdr *tar.Header, body io.Reader) error {
	if root == nil {
		return nil // the tar reader skips the body, which still passes through the checksum
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(hdr.Mode).Perm()|0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	defer f.Close()
	if _, err := io.Copy(f, ctxReader{ctx: ctx, r: body}); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return root.Chtimes(name, time.Time{}, hdr.ModTime)
}

// finishTree creates the links, then gives folders their recorded permissions and makes their entries durable.
func finishTree(root *os.Root, links []string, targets map[string]string, dirs []string) error {
	if root == nil {
		return nil
	}
	for _, name := range links {
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("creating %s: %w", dir, err)
			}
		}
		if err := root.Symlink(targets[name], name); err != nil {
			return fmt.Errorf("creating link %s: %w", name, err)
		}
	}
	for _, name := range append(dirs, ".") {
		if err := syncRootDir(root, name); err != nil {
			return err
		}
	}
	return nil
}

func syncRootDir(root *os.Root, name string) error {
	d, err := root.Open(name)
	if err != nil {
		return fmt.Errorf("opening %s to sync it: %w", name, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", name, err)
	}
	return nil
}
