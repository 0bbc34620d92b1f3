package execrunner

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

// Defaults for Config's zero fields.
const (
	DefaultStopTimeout  = 20 * time.Second
	DefaultMinBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultStableAfter  = time.Minute
	DefaultPollInterval = time.Second
	// LogFileName is the child's output file inside Config.LogDir.
	LogFileName = "ipfs-cluster-service.log"
)

// Config describes the supervised peer.
type Config struct {
	// Binary returns the service binary's path; it is called at every start so
	// that a switched "current" link takes effect on the next start.
	Binary func() (string, error)
	// ClusterConfigDir is passed as --config and identifies an adopted peer.
	ClusterConfigDir string
	// PIDFile records the running peer, so a restarted daemon adopts it.
	PIDFile string
	// LogDir receives LogFileName, which collects the child's stdout and
	// stderr (appended across starts).
	LogDir string
	// Env is added to this process's environment for the child.
	Env []string

	StopTimeout  time.Duration // SIGTERM, then SIGKILL after this long
	MinBackoff   time.Duration // first restart delay after an unexpected exit
	MaxBackoff   time.Duration // restart delays double up to this
	StableAfter  time.Duration // a child up this long resets the backoff
	PollInterval time.Duration // how often an adopted peer is checked

	Logger *zap.Logger
}

// withDefaults fills zero fields and validates the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Binary == nil {
		return c, errors.New("exec runner: no Binary function given")
	}
	if c.ClusterConfigDir == "" {
		return c, errors.New("exec runner: no cluster config folder given")
	}
	if c.PIDFile == "" {
		return c, errors.New("exec runner: no pidfile path given")
	}
	if c.LogDir == "" {
		return c, errors.New("exec runner: no log folder given")
	}
	setDuration(&c.StopTimeout, DefaultStopTimeout)
	setDuration(&c.MinBackoff, DefaultMinBackoff)
	setDuration(&c.MaxBackoff, DefaultMaxBackoff)
	setDuration(&c.StableAfter, DefaultStableAfter)
	setDuration(&c.PollInterval, DefaultPollInterval)
	if c.MaxBackoff < c.MinBackoff {
		return c, errors.New("exec runner: MaxBackoff is below MinBackoff")
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c, nil
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}
