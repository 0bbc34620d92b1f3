package svcinstall

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/upgraded/upgraded/sidecar/systemdrunner"
)

// ErrNotPermitted is returned by Check when this user may not start or stop
// the peer's unit: the polkit rule is missing or names another user or unit.
var ErrNotPermitted = errors.New("not allowed to start and stop the unit")

// RuleFile is where the .deb installs the polkit rule granting upgraded's
// user start, stop, restart and reset-failed of ipfs-cluster.service alone.
const RuleFile = "/usr/share/polkit-1/rules.d/50-upgraded.rules"

// CheckConfig says which unit the systemd runner will drive.
type CheckConfig struct {
	Unit      string
	Systemctl string // default "systemctl"
}

// Check proves, without starting or stopping anything, that the unit exists
// and that this process may manage it: the daemon's unit runs it before the
// daemon, so a wrong unit name or a missing permission rule is an error
// naming its cause rather than a failed upgrade with the peer stopped.
//
// polkit answers questions carrying a unit's name only to root, so the
// right is proved by use: `systemctl reset-failed UNIT` goes through the same
// polkit action as start and stop (org.freedesktop.systemd1.manage-units,
// with the unit as detail) and leaves a running unit as it is. The shipped
// rule grants the four verbs together.
func Check(ctx context.Context, c CheckConfig) error {
	if c.Unit == "" {
		return errors.New("checking the peer's unit: no unit name configured")
	}
	if c.Systemctl == "" {
		c.Systemctl = "systemctl"
	}
	out, err := run(ctx, c.Systemctl, "show", "-p", "LoadState", "--value", c.Unit)
	if err != nil {
		return fmt.Errorf("checking unit %s: %w", c.Unit, err)
	}
	if state := strings.TrimSpace(out); state == "not-found" || state == "" {
		return fmt.Errorf("%w: %s (is the peer's unit installed, and is runner.unit in upgraded.json right?)",
			systemdrunner.ErrUnitNotFound, c.Unit)
	}
	out, err = run(ctx, c.Systemctl, "--no-ask-password", "reset-failed", c.Unit)
	if err == nil {
		return nil
	}
	if strings.Contains(out, "Interactive authentication required") || strings.Contains(out, "Access denied") {
		return fmt.Errorf("%w %s as uid %d: systemd refused (install the polkit rule %s, which grants it to user upgraded for ipfs-cluster.service; systemctl said %q)",
			ErrNotPermitted, c.Unit, os.Geteuid(), RuleFile, strings.TrimSpace(out))
	}
	return fmt.Errorf("checking the right to manage %s: %w", c.Unit, err)
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
