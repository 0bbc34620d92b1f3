package clustersim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked means a live daemon holds the config folder's cluster.lock.
var ErrLocked = errors.New("cluster.lock is held by a running peer")

// folderLock is cluster.lock held with flock(2), like the real fslock: a
// daemon killed with SIGKILL leaves the file behind but not the lock.
type folderLock struct{ f *os.File }

func lockPath(dir string) string { return filepath.Join(dir, "cluster.lock") }

// acquireLock takes cluster.lock or fails with ErrLocked.
func acquireLock(dir string) (*folderLock, error) {
	f, err := os.OpenFile(lockPath(dir), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", lockPath(dir), err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", lockPath(dir), ErrLocked)
	}
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
	return &folderLock{f: f}, nil
}

// release removes the lock file then unlocks it.
func (l *folderLock) release() {
	_ = os.Remove(l.f.Name())
	_ = l.f.Close()
}

// checkUnlocked fails with ErrLocked when a live daemon holds dir.
func checkUnlocked(dir string) error {
	if _, err := os.Stat(lockPath(dir)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := acquireLock(dir)
	if err != nil {
		return err
	}
	l.release()
	return nil
}

// rotateRaftFolder moves dir/raft aside as raft.old.N, N one above the
// highest present, and keeps at most keep such backups (oldest removed). A
// missing or empty raft folder is left alone; it returns the new name or "".
func rotateRaftFolder(dir string, keep int) (string, error) {
	raft := filepath.Join(dir, "raft")
	des, err := os.ReadDir(raft)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(des) == 0) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading raft folder: %w", err)
	}
	olds := raftBackups(dir)
	next := 0
	if len(olds) > 0 {
		next = olds[len(olds)-1] + 1
	}
	target := filepath.Join(dir, "raft.old."+strconv.Itoa(next))
	if err := os.Rename(raft, target); err != nil {
		return "", fmt.Errorf("moving raft folder aside: %w", err)
	}
	olds = append(olds, next)
	for keep > 0 && len(olds) > keep {
		if err := os.RemoveAll(filepath.Join(dir, "raft.old."+strconv.Itoa(olds[0]))); err != nil {
			return target, fmt.Errorf("removing old raft backup: %w", err)
		}
		olds = olds[1:]
	}
	return target, nil
}

// raftBackups lists the N of dir/raft.old.N in increasing order.
func raftBackups(dir string) []int {
	des, _ := os.ReadDir(dir)
	var out []int
	for _, de := range des {
		rest, ok := strings.CutPrefix(de.Name(), "raft.old.")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(rest); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}
