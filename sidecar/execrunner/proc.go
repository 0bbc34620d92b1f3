package execrunner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// pidRecord is the pidfile's content: enough to recognise the peer again
// after the daemon was killed and restarted.
type pidRecord struct {
	PID     int       `json:"pid"`
	Binary  string    `json:"binary"`
	Config  string    `json:"config"`
	Started time.Time `json:"started"`
}

func writePIDFile(path string, rec pidRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating pidfile folder: %w", err)
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing pidfile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing pidfile: %w", err)
	}
	return nil
}

func readPIDFile(path string) (pidRecord, error) {
	var rec pidRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("parsing pidfile %s: %w", path, err)
	}
	if rec.PID <= 0 {
		return rec, fmt.Errorf("pidfile %s holds no usable pid", path)
	}
	return rec, nil
}

// processAlive tells whether pid runs and is not a zombie: an exited child
// not yet reaped still has a /proc entry but is gone for our purposes.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state letter follows the command name, which is in parentheses
	// and may itself hold spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// isOurPeer checks /proc/PID/cmdline against the record: the same binary,
// running `daemon` with this --config folder. A recycled pid belongs to some
// other program and must not be adopted or signalled.
func isOurPeer(rec pidRecord, configDir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.PID))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if args[0] != rec.Binary || filepath.Clean(rec.Config) != filepath.Clean(configDir) {
		return false
	}
	hasDaemon, hasConfig := false, false
	for i, a := range args[1:] {
		switch {
		case a == "daemon":
			hasDaemon = true
		case a == "--config" && i+2 < len(args) && filepath.Clean(args[i+2]) == filepath.Clean(configDir):
			hasConfig = true
		case strings.HasPrefix(a, "--config=") && filepath.Clean(strings.TrimPrefix(a, "--config=")) == filepath.Clean(configDir):
			hasConfig = true
		}
	}
	return hasDaemon && hasConfig
}

// sendSignal sends sig to pid, treating "already gone" as success.
func sendSignal(pid int, sig syscall.Signal) error {
	err := syscall.Kill(pid, sig)
	if err == nil || errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return fmt.Errorf("sending %v to pid %d: %w", sig, pid, err)
}
