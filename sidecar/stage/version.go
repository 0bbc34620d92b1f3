package stage

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// versionTimeout bounds `--version` when the caller's context has no
// deadline: a binary that hangs there is as bad as a wrong one.
const versionTimeout = 30 * time.Second

// waitDelay: see VerifyVersion.
const waitDelay = 10 * time.Second

// VerifyVersion runs `<service> --version` and requires it to report version
// (a leading "v" on either side is ignored). Releases print
// "ipfs-cluster-service version 1.1.6".
func VerifyVersion(ctx context.Context, servicePath, version string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, versionTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, servicePath, "--version")
	// WaitDelay also bounds how long the copy of the output may take once the
	// binary has exited. At one second a host too busy to schedule that copy
	// failed its preparation (N=100 benchmark at load 300: "WaitDelay expired
	// before I/O complete"); it only needs to stop a binary whose children
	// keep the pipe open from holding the check forever.
	cmd.WaitDelay = waitDelay
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running %s --version: %w: %s", servicePath, err, strings.TrimSpace(string(out)))
	}
	got, ok := parseVersion(string(out))
	if !ok {
		return fmt.Errorf("%s --version printed no version: %q", servicePath, strings.TrimSpace(string(out)))
	}
	if normalize(got) != normalize(version) {
		return fmt.Errorf("%s is version %s, the plan wants %s", servicePath, got, version)
	}
	return nil
}

// parseVersion takes the word after "version" on the first line that has one.
func parseVersion(out string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		for i := 0; i+1 < len(fields); i++ {
			if strings.EqualFold(fields[i], "version") {
				return fields[i+1], true
			}
		}
	}
	return "", false
}

func normalize(v string) string { return strings.TrimPrefix(strings.TrimSpace(v), "v") }
