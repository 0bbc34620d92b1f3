package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// standIn is a shell-script ipfs-cluster-service: it records each command
// line in $STANDIN_LOG and prints $STANDIN_TEXTS/<args joined by _>.txt, or
// acts out the state commands on the config folder.
const standIn = `#!/bin/sh
printf '%s\n' "$*" >> "$STANDIN_LOG"
key=$(printf '%s' "$*" | tr ' ' '_')
if [ -f "$STANDIN_TEXTS/$key.txt" ]; then cat "$STANDIN_TEXTS/$key.txt"; exit 0; fi
case "$1 $3 $4 $5" in
"--config state export -f")
	[ -n "$STANDIN_NO_EXPORT_FILE" ] || cp "$STANDIN_TEXTS/export.ndjson" "$6"
	echo "state successfully exported" ;;
"--config state import -f")
	[ -f "$6" ] || { echo "open $6: no such file or directory" >&2; exit 1; } ;;
"--config state cleanup -f")
	mv "$2/raft" "$2/raft.old.0" ;;
"--config state upgrade ")
	echo "upgraded state" ;;
*)
	i=1; while [ $i -le 20 ]; do echo "output line $i"; i=$((i+1)); done
	echo "unknown command: $*" >&2; exit 3 ;;
esac
`

type standInBinary struct {
	Binary
	log, texts string
}

// newStandIn writes the stand-in and the texts it prints, taken from a
// sample folder ("" for none) with overrides.
func newStandIn(t *testing.T, release string, overrides map[string]string) standInBinary {
	t.Helper()
	dir := t.TempDir()
	texts := filepath.Join(dir, "texts")
	if err := os.Mkdir(texts, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	if release != "" {
		for key, name := range map[string]string{"--version": "service-version.txt", "--help": "service-help.txt",
			"state_--help": "service-help-state.txt", "daemon_--help": "service-help-daemon.txt"} {
			files[key] = sampleText(t, release, name)
		}
		files["export"] = `{"cid":"bafkreianuyqu4x7gt3r5ti565qj6hwpob3ibfknh2kmbz7qnvhiqvrooim","name":"sample"}` + "\n"
	}
	for k, v := range overrides {
		files[k] = v
	}
	for key, text := range files {
		name := key + ".txt"
		if key == "export" {
			name = "export.ndjson"
		}
		if err := os.WriteFile(filepath.Join(texts, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "ipfs-cluster-service")
	if err := os.WriteFile(path, []byte(standIn), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "args.log")
	return standInBinary{
		Binary: Binary{Path: path, Env: []string{"STANDIN_LOG=" + log, "STANDIN_TEXTS=" + texts}},
		log:    log, texts: texts,
	}
}

// calls returns the command lines the stand-in was run with.
func (s standInBinary) calls(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(s.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

func TestBinaryVersionAndCapabilities(t *testing.T) {
	current := Capabilities{StateCleanup: true, StateExport: true, StateImport: true, Bootstrap: true, CRDTCommands: true}
	tests := []struct {
		name, release string
		overrides     map[string]string
		version       string
		caps          Capabilities
	}{
		{"0.14.5", "0.14.5-crdt", nil, "0.14.5", Capabilities{StateCleanup: true, StateExport: true, StateImport: true, Bootstrap: true}},
		{"1.0.8", "1.0.8-raft", nil, "1.0.8", current},
		{"1.1.6", "1.1.6-raft", nil, "1.1.6", current},
		{"made-up old release", "0.14.5-crdt",
			map[string]string{"--version": "ipfs-cluster-service version 0.10.1+git0f3c1a2\n",
				"state_--help": oldStateHelp, "daemon_--help": oldDaemonHelp},
			"0.10.1", Capabilities{StateUpgrade: true, DaemonUpgrade: true, StateCleanup: true, StateExport: true, StateImport: true, Bootstrap: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newStandIn(t, tt.release, tt.overrides)
			if v, err := b.Version(testCtx(t)); err != nil || v != tt.version {
				t.Fatalf("Version = %q, %v; want %q", v, err, tt.version)
			}
			caps, err := b.Capabilities(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if caps != tt.caps {
				t.Errorf("Capabilities = %+v, want %+v", caps, tt.caps)
			}
			if got, want := b.calls(t), []string{"--version", "--help", "state --help", "daemon --help"}; !slices.Equal(got, want) {
				t.Errorf("ran %q, want %q", got, want)
			}
		})
	}
}

func TestBinaryCapabilitiesWithoutState(t *testing.T) {
	top := strings.Replace(sampleText(t, "1.1.6-crdt", "service-help.txt"),
		"   state    Manages the peer's persistent state (pinset)\n", "", 1)
	b := newStandIn(t, "1.1.6-crdt", map[string]string{"--help": top})
	caps, err := b.Capabilities(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Capabilities{Bootstrap: true}); caps != want {
		t.Errorf("Capabilities = %+v, want %+v", caps, want)
	}
	if slices.Contains(b.calls(t), "state --help") {
		t.Error("asked for the help of a command the binary does not list")
	}
}

func TestBinaryVersionUnreadable(t *testing.T) {
	b := newStandIn(t, "", map[string]string{"--version": "ipfs-cluster-service (development build)\n"})
	_, err := b.Version(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "development build") {
		t.Fatalf("Version = %v, want an error quoting the output", err)
	}
}

func TestBinaryStateCommands(t *testing.T) {
	b := newStandIn(t, "1.1.6-raft", nil)
	ctx := testCtx(t)
	cfgDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cfgDir, "raft", "snapshots"), 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pins.ndjson")

	if err := b.StateExport(ctx, cfgDir, out); err != nil {
		t.Fatalf("StateExport: %v", err)
	}
	if data, err := os.ReadFile(out); err != nil || !strings.Contains(string(data), "bafkreianuy") {
		t.Fatalf("export file = %q, %v", data, err)
	}
	if err := b.StateImport(ctx, cfgDir, out); err != nil {
		t.Fatalf("StateImport: %v", err)
	}
	if err := b.StateCleanup(ctx, cfgDir); err != nil {
		t.Fatalf("StateCleanup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "raft.old.0", "snapshots")); err != nil {
		t.Fatalf("cleanup did not move raft aside: %v", err)
	}
	if err := b.StateUpgrade(ctx, cfgDir); err != nil {
		t.Fatalf("StateUpgrade: %v", err)
	}
	want := []string{
		"--config " + cfgDir + " state export -f " + out,
		"--config " + cfgDir + " state import -f " + out,
		"--config " + cfgDir + " state cleanup -f",
		"--config " + cfgDir + " state upgrade",
	}
	if got := b.calls(t); !slices.Equal(got, want) {
		t.Errorf("ran\n%q\nwant\n%q", got, want)
	}
}

func TestBinaryStateExportWithoutFile(t *testing.T) {
	b := newStandIn(t, "1.1.6-raft", nil)
	b.Env = append(b.Env, "STANDIN_NO_EXPORT_FILE=1")
	err := b.StateExport(testCtx(t), t.TempDir(), filepath.Join(t.TempDir(), "pins.ndjson"))
	if err == nil || !strings.Contains(err.Error(), "wrote no file") {
		t.Fatalf("StateExport = %v, want an error about the missing file", err)
	}
}

func TestBinaryFailureCarriesCommandAndOutput(t *testing.T) {
	b := newStandIn(t, "1.1.6-raft", nil)
	missing := filepath.Join(t.TempDir(), "missing.ndjson")
	err := b.StateImport(testCtx(t), "/cfg", missing)
	var cmdErr *CommandError
	if !errors.As(err, &cmdErr) {
		t.Fatalf("StateImport = %v, want a *CommandError", err)
	}
	if !strings.Contains(err.Error(), b.Path+" --config /cfg state import -f "+missing) ||
		!strings.Contains(cmdErr.Output, "no such file or directory") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("error lacks the command line or the output: %v", err)
	}

	// Only the last lines are quoted.
	_, err = b.run(testCtx(t), "frobnicate")
	if !errors.As(err, &cmdErr) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("run = %v, want a *CommandError with exit status 3", err)
	}
	lines := strings.Split(cmdErr.Output, "\n")
	if len(lines) != errorTailLines || !strings.Contains(cmdErr.Output, "unknown command") ||
		!strings.Contains(cmdErr.Output, "output line 20") || strings.Contains(cmdErr.Output, "output line 5\n") {
		t.Errorf("output tail = %q", cmdErr.Output)
	}
}

// A command whose output stays open for a few seconds after it exited (a
// straggling child here; a host too busy to copy the output at N=100) is
// still read whole, not failed with "WaitDelay expired before I/O complete".
func TestBinaryOutputReadAfterASlowClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipfs-cluster-service")
	script := "#!/bin/sh\necho 'Usage: ipfs-cluster-service daemon'\n(sleep 3; echo '  --upgrade') &\nexit 0\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := Binary{Path: path}.run(testCtx(t), "daemon", "--help")
	if err != nil {
		t.Fatalf("run = %v", err)
	}
	if !strings.Contains(out, "Usage") || !strings.Contains(out, "--upgrade") {
		t.Fatalf("output %q lacks what was written before or after the exit", out)
	}
}

func TestBinaryMissing(t *testing.T) {
	if _, err := (Binary{}).Version(testCtx(t)); err == nil {
		t.Error("an unset path ran")
	}
	_, err := (Binary{Path: filepath.Join(t.TempDir(), "nope")}).Version(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Version of a missing binary = %v", err)
	}
}

// TestBinaryCancelKillsProcessGroup runs a stand-in whose export hangs in a
// child process and checks the deadline ends both, promptly.
func TestBinaryCancelKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := "#!/bin/sh\nsleep 60 &\necho $! > " + pidFile + "\nwait\n"
	path := filepath.Join(dir, "ipfs-cluster-service")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Binary{Path: path}.StateExport(ctx, dir, filepath.Join(dir, "out.ndjson"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StateExport = %v, want the deadline's error", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("returned after %v, long after the deadline", elapsed)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the script never started its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("child %d to die", pid), func() bool { return !processAlive(pid) })
}

// processAlive treats a zombie as dead: in a container nobody may reap it.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || (stat[i+2] != 'Z' && stat[i+2] != 'X')
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
