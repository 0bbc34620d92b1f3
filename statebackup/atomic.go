package statebackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// pendingFile is a file being written under a temporary name in its final folder. Nothing appears under the final
// name until commit, which makes the content durable before the rename and the rename durable after it.
type pendingFile struct {
	f         *os.File
	final     string
	committed bool
}

func createPending(final string) (*pendingFile, error) {
	f, err := os.CreateTemp(filepath.Dir(final), tempPrefix+filepath.Base(final)+"-*")
	if err != nil {
		return nil, fmt.Errorf("creating temporary file for %s: %w", final, err)
	}
	return &pendingFile{f: f, final: final}, nil
}

func (p *pendingFile) Write(b []byte) (int, error) { return p.f.Write(b) }

// commit syncs the content, renames it to the final name and syncs the folder.
func (p *pendingFile) commit() error {
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("flushing %s to disk: %w", p.f.Name(), err)
	}
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", p.f.Name(), err)
	}
	if err := os.Rename(p.f.Name(), p.final); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", p.f.Name(), p.final, err)
	}
	p.committed = true
	return syncDir(filepath.Dir(p.final))
}

// abort removes the temporary file; it does nothing after a successful commit, so it can always be deferred.
func (p *pendingFile) abort() {
	if p.committed {
		return
	}
	_ = p.f.Close()
	_ = os.Remove(p.f.Name())
}

func writeFileAtomic(path string, data []byte) error {
	p, err := createPending(path)
	if err != nil {
		return err
	}
	defer p.abort()
	if _, err := p.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", p.f.Name(), err)
	}
	return p.commit()
}

// syncDir makes a rename or removal in dir survive a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening folder %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	return nil
}

// ctxReader stops a long copy as soon as its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
