package stage

import (
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// DiskFullFileEnv names a TEST HOOK used by the chaos tests (internal/chaos):
// when this variable names a file, every artifact Fetch writes fails with
// ENOSPC, as on a full disk, while that file exists. The file may hold a
// byte count: that many bytes of each artifact are written before the
// failure. It stands in for a tiny tmpfs, which would need root and a mount.
// Unset, which it always is in production, nothing changes.
const DiskFullFileEnv = "UPGRADED_TEST_DISKFULL_FILE"

// diskFullHook returns the writer wrapper of the hook, or nil when unset.
func diskFullHook() func(io.Writer) io.Writer {
	path := os.Getenv(DiskFullFileEnv)
	if path == "" {
		return nil
	}
	return func(w io.Writer) io.Writer { return &fillingWriter{w: w, path: path} }
}

// fillingWriter passes writes through until the hook's file exists and its
// byte allowance is spent.
type fillingWriter struct {
	w       io.Writer
	path    string
	written int64
}

func (f *fillingWriter) Write(p []byte) (int, error) {
	b, err := os.ReadFile(f.path)
	if err != nil { // no file: the disk has room
		n, err := f.w.Write(p)
		f.written += int64(n)
		return n, err
	}
	allow, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	room := max(allow-f.written, 0)
	if int64(len(p)) <= room {
		n, err := f.w.Write(p)
		f.written += int64(n)
		return n, err
	}
	n, err := f.w.Write(p[:room])
	f.written += int64(n)
	if err != nil {
		return n, err
	}
	return n, &os.PathError{Op: "write", Path: f.path, Err: syscall.ENOSPC}
}
