package statebackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"go.uber.org/zap"
)

// Verify re-reads backup id: the stored file's SHA-256 and size must match the manifest, an export must hold
// exactly the manifest's number of distinct pins, and an archive must be one RestoreFolder would accept. Failures
// wrap ErrMissing, ErrChecksum or ErrCountMismatch where one of those is the cause.
func (s *Store) Verify(ctx context.Context, id string) (*Manifest, error) {
	m, err := s.Get(id)
	if err != nil {
		return nil, err
	}
	err = s.readStored(ctx, m, func(r io.Reader) error {
		if m.Kind.isExport() {
			return checkExport(m, s.dedupe, r, io.Discard, s.reopenStored(ctx, m))
		}
		return walkArchive(ctx, r, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("verifying backup %s: %w", id, err)
	}
	s.log.Debug("backup verified", zap.String("id", id), zap.Int("pins", m.Pins))
	return m, nil
}

// readStored gives the stored file of m to process and then checks its checksum and size. The checksum decides
// first: when the bytes are not the recorded ones, the result is ErrChecksum whatever process said (a truncated
// file also fails to decompress, but the cause an operator needs is that the file changed). Only if the bytes are
// intact does process's own error count.
func (s *Store) readStored(ctx context.Context, m *Manifest, process func(io.Reader) error) error {
	f, err := os.Open(s.path(m.File))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrMissing, s.path(m.File))
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", m.File, err)
	}
	defer f.Close()
	h := sha256.New()
	counted := &countingReader{r: ctxReader{ctx: ctx, r: f}}
	stored := io.TeeReader(counted, h)
	perr := process(stored)
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, stored); err != nil {
		return fmt.Errorf("reading %s: %w", m.File, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != m.SHA256 || counted.n != m.Size {
		return fmt.Errorf("%w: %s has %d bytes with sha256 %s, the manifest recorded %d bytes with sha256 %s",
			ErrChecksum, m.File, counted.n, sum, m.Size, m.SHA256)
	}
	if perr != nil {
		return fmt.Errorf("content of %s: %w", m.File, perr)
	}
	return nil
}
