package statebackup

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// CopyFolder archives a state folder (tar+gzip) as a new backup. The peer must be stopped: a file that changes
// size while it is copied fails the backup rather than storing a torn copy.
func (s *Store) CopyFolder(ctx context.Context, folder string, meta Meta) (*Manifest, error) {
	abs, real, err := s.folderToCopy(folder)
	if err != nil {
		return nil, err
	}
	id, created := s.newID(KindStateFolder, filepath.Base(abs))
	defer s.release(id)
	m := newManifest(id, KindStateFolder, created, meta)
	m.File, m.Source, m.Folder, m.Pins = id+archiveExt, abs, filepath.Base(abs), -1
	p, err := createPending(s.path(m.File))
	if err != nil {
		return nil, fmt.Errorf("copying state folder %s: %w", abs, err)
	}
	defer p.abort()
	h := sha256.New()
	out := &countingWriter{w: io.MultiWriter(p, h)}
	if err := writeArchive(ctx, real, out); err != nil {
		return nil, fmt.Errorf("copying state folder %s: %w", abs, err)
	}
	if err := p.commit(); err != nil {
		return nil, fmt.Errorf("copying state folder %s: %w", abs, err)
	}
	m.Size, m.SHA256 = out.n, hex.EncodeToString(h.Sum(nil))
	return s.finish(m)
}

// folderToCopy resolves folder (which may be a link to another disk) and refuses one that holds the store
// itself, since the archive would then try to contain itself.
func (s *Store) folderToCopy(folder string) (abs, real string, err error) {
	abs, err = filepath.Abs(folder)
	if err == nil {
		real, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", "", fmt.Errorf("copying state folder %s: %w", folder, err)
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", "", fmt.Errorf("copying state folder %s: %w", folder, err)
	}
	if !info.IsDir() {
		return "", "", fmt.Errorf("copying state folder %s: not a folder", folder)
	}
	storeReal, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		return "", "", fmt.Errorf("copying state folder %s: %w", folder, err)
	}
	if rel, err := filepath.Rel(real, storeReal); err == nil && filepath.IsLocal(rel) {
		return "", "", fmt.Errorf("copying state folder %s: the backup store %s is inside it", folder, s.dir)
	}
	return abs, real, nil
}

// folderGzipLevel is BestSpeed: a state folder is copied while its peer is
// stopped, on every host at once, so the copy is part of the cluster's
// outage. At gzip's default level it ran at 43-62 MB/s (BenchmarkCopyFolder:
// over a second per 64 MB, seconds for a large pinset's datastore), most of
// it spent compressing tables that pebble and leveldb already compressed;
// BestSpeed copies 1.8 times as fast (raw pin records) to 4.2 times
// (compressed tables), for an archive at most half a point larger.
const folderGzipLevel = gzip.BestSpeed

func writeArchive(ctx context.Context, root string, w io.Writer) error {
	buf := bufio.NewWriterSize(w, 256<<10)
	gz, err := gzip.NewWriterLevel(buf, folderGzipLevel)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		return archiveEntry(ctx, tw, p, filepath.ToSlash(rel), d)
	})
	if err != nil {
		return err
	}
	for _, c := range []io.Closer{tw, gz} {
		if err := c.Close(); err != nil {
			return fmt.Errorf("finishing archive: %w", err)
		}
	}
	return buf.Flush()
}

func archiveEntry(ctx context.Context, tw *tar.Writer, p, name string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: name, Mode: int64(info.Mode().Perm()), ModTime: info.ModTime(), Format: tar.FormatPAX}
	switch {
	case d.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		return tw.WriteHeader(hdr)
	case d.Type().IsRegular():
		return archiveFile(ctx, tw, p, hdr)
	case d.Type()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if err := checkLinkTarget(name, filepath.ToSlash(target)); err != nil {
			return fmt.Errorf("not archiving %s: %w", p, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, filepath.ToSlash(target)
		return tw.WriteHeader(hdr)
	}
	return fmt.Errorf("not archiving %s: a %s has no place in a state folder", p, info.Mode().Type())
}

func archiveFile(ctx context.Context, tw *tar.Writer, p string, hdr *tar.Header) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	n, err := io.CopyN(tw, ctxReader{ctx: ctx, r: f}, hdr.Size)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("archiving %s: it shrank from %d to %d bytes while being copied; is the peer stopped?",
			p, hdr.Size, n)
	}
	if err != nil {
		return fmt.Errorf("archiving %s: %w", p, err)
	}
	if extra, _ := f.Read(make([]byte, 1)); extra > 0 {
		return fmt.Errorf("archiving %s: it grew while being copied; is the peer stopped?", p)
	}
	return nil
}

// RestoreFolder replaces the state folder dst with the archived copy of backup id. The archive is extracted into a
// temporary sibling of dst and checked (checksum, entry names) in the same pass; only then is dst renamed to
// dst+".replaced-<time>" and the copy renamed to dst. State is never deleted: a failure leaves dst as it was.
// The peer that owns dst must be stopped.
func (s *Store) RestoreFolder(ctx context.Context, id, dst string) error {
	m, err := s.Get(id)
	if err != nil {
		return err
	}
	if m.Kind != KindStateFolder {
		return fmt.Errorf("restoring backup %s as a folder: it is a %s, not a state-folder copy", id, m.Kind)
	}
	abs, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("restoring backup %s into %s: %w", id, dst, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".restoring-*")
	if err != nil {
		return fmt.Errorf("restoring backup %s into %s: %w", id, abs, err)
	}
	swapped := false
	defer func() {
		if !swapped {
			_ = os.RemoveAll(tmp) // our own partial extraction, never the peer's state
		}
	}()
	if err := s.readStored(ctx, m, func(r io.Reader) error { return extractInto(ctx, r, tmp) }); err != nil {
		return fmt.Errorf("restoring backup %s into %s: %w", id, abs, err)
	}
	replaced, err := s.swapIn(tmp, abs)
	if err != nil {
		return fmt.Errorf("restoring backup %s into %s: %w", id, abs, err)
	}
	swapped = true
	s.log.Info("state folder restored from backup", zap.String("id", id), zap.String("folder", abs),
		zap.String("previous_folder_kept_as", replaced))
	return nil
}

func extractInto(ctx context.Context, r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return walkArchive(ctx, r, root)
}

// swapIn moves dst aside (if it exists) and puts tmp in its place, returning where the old dst went. If the
// second rename fails the first is undone.
func (s *Store) swapIn(tmp, dst string) (string, error) {
	replaced := ""
	if _, err := os.Lstat(dst); err == nil {
		replaced = s.replacedName(dst)
		if err := os.Rename(dst, replaced); err != nil {
			return "", fmt.Errorf("moving the current folder aside: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		if replaced != "" {
			if uerr := os.Rename(replaced, dst); uerr != nil {
				s.log.Error("could not move the state folder back after a failed restore; it is kept aside",
					zap.String("folder", dst), zap.String("kept_as", replaced), zap.Error(uerr))
			}
		}
		return "", fmt.Errorf("moving the restored copy into place: %w", err)
	}
	return replaced, syncDir(filepath.Dir(dst))
}

func (s *Store) replacedName(dst string) string {
	base := dst + ".replaced-" + s.now().UTC().Format("20060102T150405Z")
	name := base
	for n := 2; n < 10000; n++ {
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			break
		}
		name = fmt.Sprintf("%s-%d", base, n)
	}
	return name // after 10000 taken names, renaming onto a non-empty folder fails rather than overwriting it
}
