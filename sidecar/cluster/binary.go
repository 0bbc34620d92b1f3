package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

const (
	// maxOutput bounds the output kept from one invocation; help texts are
	// a few KiB, and an error only needs the last lines.
	maxOutput = 1 << 20
	// errorTailLines is how much of the output an error quotes.
	errorTailLines = 10
	// waitDelay bounds how long the output pipes may stay open once the
	// command exited or was killed (e.g. through a child it left behind)
	// before Wait gives up. It also bounds the copy of the output after a
	// normal exit: at 2 s a host of the N=100 benchmark too busy to schedule
	// that copy failed its preparation on `daemon --help` ("WaitDelay
	// expired before I/O complete"), as stage.VerifyVersion had at 1 s.
	waitDelay = 10 * time.Second
)

// Binary is an installed `ipfs-cluster-service`.
type Binary struct {
	Path string
	// Env is added to upgraded's own environment for every invocation.
	Env []string
}

// CommandError is a failed invocation of the binary: its command line, why
// it failed and the last lines it printed.
type CommandError struct {
	Args   []string // the whole command line, binary first
	Err    error    // the exit status, or the context's error when cancelled
	Output string   // the last lines of stdout and stderr together
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("running %s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Output != "" {
		msg += "; last output:\n" + e.Output
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// versionRe finds the release in `--version` output; a build suffix
// ("+git...") is accepted and dropped by NormalizeVersion.
var versionRe = regexp.MustCompile(`(?m)\bversion\s+(v?[0-9]+(?:\.[0-9]+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+\S*)?)`)

// Version runs `--version` and returns the release, e.g. "1.1.6".
func (b Binary) Version(ctx context.Context) (string, error) {
	out, err := b.run(ctx, "--version")
	if err != nil {
		return "", err
	}
	return parseVersionOutput(out)
}

func parseVersionOutput(out string) (string, error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no version in the output of --version: %q", truncate(strings.TrimSpace(out), 200))
	}
	v, err := NormalizeVersion(m[1])
	if err != nil {
		return "", fmt.Errorf("reading the output of --version %q: %w", truncate(strings.TrimSpace(out), 200), err)
	}
	return v, nil
}

// StateExport writes the peer's pinset to outFile as newline-delimited JSON
// (`--config DIR state export -f FILE`). The peer must be stopped. On raft
// it only reads the last snapshot: verify the result against a live count.
func (b Binary) StateExport(ctx context.Context, configDir, outFile string) error {
	if _, err := b.run(ctx, "--config", configDir, "state", "export", "-f", outFile); err != nil {
		return err
	}
	// Releases report success whatever they found; at least the file must exist.
	if _, err := os.Stat(outFile); err != nil {
		return fmt.Errorf("state export reported success but wrote no file: %w", err)
	}
	return nil
}

// StateImport replaces the peer's pinset with file (`--config DIR state
// import -f FILE`, -f skipping the confirmation prompt).
func (b Binary) StateImport(ctx context.Context, configDir, file string) error {
	_, err := b.run(ctx, "--config", configDir, "state", "import", "-f", file)
	return err
}

// StateCleanup removes the peer's consensus state (`--config DIR state
// cleanup -f`); on raft the release moves raft/ aside as raft.old.N.
func (b Binary) StateCleanup(ctx context.Context, configDir string) error {
	_, err := b.run(ctx, "--config", configDir, "state", "cleanup", "-f")
	return err
}

// StateUpgrade runs the state migrations of old releases (`--config DIR
// state upgrade`); check Capabilities().StateUpgrade first.
func (b Binary) StateUpgrade(ctx context.Context, configDir string) error {
	_, err := b.run(ctx, "--config", configDir, "state", "upgrade")
	return err
}

// run executes the binary with args and returns what it printed. The
// process (and its process group) is killed when ctx ends.
func (b Binary) run(ctx context.Context, args ...string) (string, error) {
	if b.Path == "" {
		return "", errors.New("no ipfs-cluster-service binary configured")
	}
	cmd := exec.CommandContext(ctx, b.Path, args...)
	cmd.Env = append(os.Environ(), b.Env...)
	cmd.Stdin = nil // never wait on a confirmation prompt
	out := &tailBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = waitDelay
	killGroupOnCancel(cmd)
	err := cmd.Run()
	if err == nil {
		return out.String(), nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = fmt.Errorf("%w (%v)", ctxErr, err)
	}
	return out.String(), &CommandError{
		Args:   append([]string{b.Path}, args...),
		Err:    err,
		Output: lastLines(out.String(), errorTailLines),
	}
}

// tailBuffer keeps the last max bytes written to it; it is shared by stdout
// and stderr, which exec may copy from two goroutines.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
