// Package systemdtest proves the .deb on real systemd hosts: Debian 12
// containers with systemd as PID 1 (../shared/tools/systemd-host.sh), the
// package built by `make dist`, the cluster peers played by the simulator.
// Its only test file drives everything; this file holds the host helpers.
package systemdtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// HostImage is the systemd host image with polkitd added, derived from the
// tool's image (debootstrap cannot configure polkitd itself).
const HostImage = "localhost/upgraded-systemd-host:12"

// Engine runs podman against the container engine of container-engine.sh.
type Engine struct {
	Tools string   // folder of container-engine.sh and systemd-host.sh
	env   []string // the engine's variables on top of os.Environ
}

// StartEngine brings the container engine up (installing podman when
// missing, which needs root) and returns a handle on it.
func StartEngine(ctx context.Context, tools string) (*Engine, error) {
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(tools, "container-engine.sh"), "up").Output()
	if err != nil {
		return nil, fmt.Errorf("bringing the container engine up: %w: %s", err, stderrOf(err))
	}
	e := &Engine{Tools: tools, env: os.Environ()}
	// The tool prints one line: export A=x B=y.
	for _, f := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(string(out)), "export ")) {
		if strings.Contains(f, "=") {
			e.env = append(e.env, f)
		}
	}
	return e, nil
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// Run runs a command with the engine's environment; the error carries its
// output.
func (e *Engine) Run(ctx context.Context, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cmd.Env, e.env...)
	cmd.Stdin = stdin
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// EnsureImage builds the tool's image when missing, then HostImage from it
// by installing polkitd in a running host and committing it.
func (e *Engine) EnsureImage(ctx context.Context) error {
	if _, err := e.Run(ctx, nil, "podman", "image", "exists", HostImage); err == nil {
		return nil
	}
	if _, err := e.Run(ctx, nil, "bash", filepath.Join(e.Tools, "systemd-host.sh"), "image"); err != nil {
		return fmt.Errorf("building the systemd host image: %w", err)
	}
	name := fmt.Sprintf("upgraded-imagebuild-%d", os.Getpid())
	defer e.Run(context.Background(), nil, "podman", "rm", "-f", name) //nolint:errcheck // best effort
	steps := [][]string{
		{"podman", "run", "-d", "--name", name, "--network=host", "localhost/debian-systemd:12", "sleep", "600"},
		{"podman", "exec", name, "sh", "-c", "apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends polkitd adduser procps >/dev/null && apt-get clean"},
		{"podman", "commit", "-q", name, HostImage},
	}
	for _, s := range steps {
		if _, err := e.Run(ctx, nil, s[0], s[1:]...); err != nil {
			return fmt.Errorf("adding polkitd to the systemd host image: %w", err)
		}
	}
	return nil
}

// StartHosts starts systemd hosts of HostImage and waits for systemd.
func (e *Engine) StartHosts(ctx context.Context, names ...string) error {
	args := append([]string{filepath.Join(e.Tools, "systemd-host.sh"), "start"}, names...)
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Env = append(append(cmd.Env, e.env...), "SYSTEMD_HOST_IMAGE="+HostImage)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("starting systemd hosts %v: %w: %s", names, err, out)
	}
	return nil
}

// StopHosts removes the hosts; errors are ignored, it is for cleanup.
func (e *Engine) StopHosts(names ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{filepath.Join(e.Tools, "systemd-host.sh"), "stop"}, names...)
	_, _ = e.Run(ctx, nil, "bash", args...)
}

// Host is one running systemd host.
type Host struct {
	E    *Engine
	Name string
}

// Sh runs a shell script on the host as root.
func (h Host) Sh(ctx context.Context, script string) (string, error) {
	return h.E.Run(ctx, nil, "podman", "exec", h.Name, "sh", "-c", script)
}

// As runs a command on the host as user, through runuser (no shell).
func (h Host) As(ctx context.Context, user string, args ...string) (string, error) {
	return h.E.Run(ctx, nil, "podman", append([]string{"exec", h.Name, "runuser", "-u", user, "--"}, args...)...)
}

// Write writes content to path on the host with owner and mode.
func (h Host) Write(ctx context.Context, path string, content []byte, owner, mode string) error {
	script := fmt.Sprintf("cat > %q && chown %s %q && chmod %s %q", path, owner, path, mode, path)
	if _, err := h.E.Run(ctx, bytes.NewReader(content), "podman", "exec", "-i", h.Name, "sh", "-c", script); err != nil {
		return fmt.Errorf("writing %s on %s: %w", path, h.Name, err)
	}
	return nil
}

// Copy copies a local file or folder content to the host.
func (h Host) Copy(ctx context.Context, src, dst string) error {
	if _, err := h.E.Run(ctx, nil, "podman", "cp", src, h.Name+":"+dst); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, h.Name, err)
	}
	return nil
}

// Show reads unit properties with systemctl show.
func (h Host) Show(ctx context.Context, unit string, props ...string) (map[string]string, error) {
	out, err := h.Sh(ctx, fmt.Sprintf("systemctl show -p %s %s", strings.Join(props, ","), unit))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// WaitFor polls cond until it holds or ctx ends; the error names what.
func WaitFor(ctx context.Context, what string, cond func() (bool, string)) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %s)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}
