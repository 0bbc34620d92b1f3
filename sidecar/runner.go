// Package sidecar holds the host's own side of an upgrade: starting and
// stopping the IPFS Cluster peer, driving it, and staging its binaries.
package sidecar

import (
	"context"
	"time"
)

// Runner starts and stops the IPFS Cluster peer on this host.
//
// Implementations (a supervised child process, a systemd unit, a container)
// must make Stop of an already stopped peer a no-op, so that a daemon resuming
// a half-done step can simply repeat it.
type Runner interface {
	// Start launches the peer and returns once the process is started, not
	// once it is healthy: health is the cluster driver's business.
	Start(ctx context.Context, opts StartOptions) error
	// Stop stops the peer gracefully and returns once its process is gone.
	Stop(ctx context.Context) error
	// Status reports what the runner knows about the peer process.
	Status(ctx context.Context) (Status, error)
}

// StartOptions change one start only; the next Start without them runs the
// peer the ordinary way again.
type StartOptions struct {
	// ExtraArgs are appended after `daemon`, e.g. `--bootstrap MULTIADDR`.
	ExtraArgs []string
}

// Status describes the peer process as seen by its runner.
type Status struct {
	Running  bool
	PID      int
	Since    time.Time // when the running process started
	Restarts int       // unexpected exits the runner recovered from
	LastExit string    // how the last process ended, for operators
}
