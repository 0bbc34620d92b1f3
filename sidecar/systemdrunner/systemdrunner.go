// Package systemdrunner runs the IPFS Cluster peer as a systemd unit, by
// calling systemctl.
package systemdrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar"
)

// ErrUnitNotFound is returned when systemd does not know the unit: the
// operator named the wrong unit or never installed it.
var ErrUnitNotFound = errors.New("systemd unit not found")

// ExtraArgsVar is the variable written to Config.ExtraArgsFile; the unit's
// ExecStart should end with `daemon $IPFS_CLUSTER_EXTRA_ARGS` and load the
// file with `EnvironmentFile=-<file>`.
const ExtraArgsVar = "IPFS_CLUSTER_EXTRA_ARGS"

// Config says which unit to drive and how.
type Config struct {
	Unit      string // e.g. ipfs-cluster.service
	Systemctl string // path of systemctl; default "systemctl" from $PATH
	// ExtraArgsFile is the EnvironmentFile through which one start receives
	// extra daemon arguments (such as --bootstrap). Empty: Start refuses
	// extra arguments, since a unit's command line cannot be changed otherwise.
	ExtraArgsFile string
	Logger        *zap.Logger
}

// Runner starts and stops the peer through its systemd unit.
type Runner struct {
	cfg Config
	log *zap.Logger
}

var _ sidecar.Runner = (*Runner)(nil)

// New checks cfg and returns a runner; it does not talk to systemd yet.
func New(cfg Config) (*Runner, error) {
	if cfg.Unit == "" {
		return nil, errors.New("systemd runner: no unit name given")
	}
	if cfg.Systemctl == "" {
		cfg.Systemctl = "systemctl"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Runner{cfg: cfg, log: cfg.Logger.Named("systemd-runner").With(zap.String("unit", cfg.Unit))}, nil
}

// Start starts the unit; systemctl returns once systemd has started it.
func (r *Runner) Start(ctx context.Context, opts sidecar.StartOptions) error {
	if err := r.checkLoaded(ctx); err != nil {
		return err
	}
	if len(opts.ExtraArgs) > 0 {
		if r.cfg.ExtraArgsFile == "" {
			return fmt.Errorf("starting %s with %v: no extra-arguments file configured for the unit", r.cfg.Unit, opts.ExtraArgs)
		}
		if err := writeExtraArgs(r.cfg.ExtraArgsFile, opts.ExtraArgs); err != nil {
			return fmt.Errorf("starting %s: %w", r.cfg.Unit, err)
		}
		// The arguments are for this start only: a later restart by systemd
		// (Restart=on-failure) must not, e.g., bootstrap again and move the
		// raft folder aside a second time.
		defer func() {
			if err := writeExtraArgs(r.cfg.ExtraArgsFile, nil); err != nil {
				r.log.Error("could not clear the one-time start arguments", zap.Error(err))
			}
		}()
	}
	r.log.Info("starting the cluster peer unit", zap.Strings("extra_args", opts.ExtraArgs))
	if _, err := r.systemctl(ctx, "start", r.cfg.Unit); err != nil {
		return fmt.Errorf("starting %s: %w", r.cfg.Unit, err)
	}
	return nil
}

// Stop stops the unit; systemctl returns once the unit's processes are gone.
// Stopping an inactive unit is a no-op for systemd as well.
func (r *Runner) Stop(ctx context.Context) error {
	if err := r.checkLoaded(ctx); err != nil {
		return err
	}
	r.log.Info("stopping the cluster peer unit")
	if _, err := r.systemctl(ctx, "stop", r.cfg.Unit); err != nil {
		return fmt.Errorf("stopping %s: %w", r.cfg.Unit, err)
	}
	return nil
}

// Status reports the unit's main process.
func (r *Runner) Status(ctx context.Context) (sidecar.Status, error) {
	if err := r.checkLoaded(ctx); err != nil {
		return sidecar.Status{}, err
	}
	// is-active exits non-zero for any state but active; its output is
	// what matters, so its error is not one.
	out, _ := r.systemctl(ctx, "is-active", r.cfg.Unit)
	if ctx.Err() != nil {
		return sidecar.Status{}, fmt.Errorf("status of %s: %w", r.cfg.Unit, ctx.Err())
	}
	state := strings.TrimSpace(out)
	props, err := r.show(ctx, "MainPID", "ActiveEnterTimestamp", "NRestarts", "Result")
	if err != nil {
		return sidecar.Status{}, fmt.Errorf("status of %s: %w", r.cfg.Unit, err)
	}
	st := sidecar.Status{Running: state == "active" || state == "reloading" || state == "deactivating"}
	st.PID, _ = strconv.Atoi(props["MainPID"])
	st.Restarts, _ = strconv.Atoi(props["NRestarts"])
	if st.Running {
		st.Since = parseTimestamp(props["ActiveEnterTimestamp"])
	}
	if res := props["Result"]; res != "" && res != "success" || state == "failed" {
		st.LastExit = fmt.Sprintf("unit %s, result %s", state, res)
	}
	return st, nil
}

// checkLoaded turns "unit not found" into a clear error instead of letting
// systemctl's start/stop message stand for it.
func (r *Runner) checkLoaded(ctx context.Context) error {
	props, err := r.show(ctx, "LoadState")
	if err != nil {
		return fmt.Errorf("checking unit %s: %w", r.cfg.Unit, err)
	}
	if props["LoadState"] == "not-found" {
		return fmt.Errorf("%w: %s (systemctl show says LoadState=not-found)", ErrUnitNotFound, r.cfg.Unit)
	}
	return nil
}

func (r *Runner) show(ctx context.Context, props ...string) (map[string]string, error) {
	out, err := r.systemctl(ctx, "show", "-p", strings.Join(props, ","), r.cfg.Unit)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string)
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// systemctl runs one systemctl command; a failure carries its output, which
// is where systemd says why.
func (r *Runner) systemctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.cfg.Systemctl, args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// parseTimestamp reads systemd's "Tue 2026-11-24 11:44:08 UTC"; an empty or
// unreadable value gives the zero time, since Since is informative only.
func parseTimestamp(s string) time.Time {
	s = strings.TrimSpace(s)
	for _, layout := range []string{"Mon 2006-01-02 15:04:05 MST", "Mon 2006-01-02 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// writeExtraArgs replaces the unit's EnvironmentFile atomically. systemd
// splits an unbraced $VAR in ExecStart at whitespace, so arguments holding
// whitespace or quotes cannot pass this way and are refused.
func writeExtraArgs(path string, args []string) error {
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\r'\"\\$") {
			return fmt.Errorf("start argument %q cannot be passed through an environment file", a)
		}
	}
	content := ExtraArgsVar + "=" + strings.Join(args, " ") + "\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating the folder of %s: %w", path, err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}
