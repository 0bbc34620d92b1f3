package clustersim

import (
	"os"
	"strings"
	"time"
)

// SlowStartFileEnv names the simulator's slow-start fault, used by the chaos
// tests: when this variable names a file that exists as a peer starts, the
// duration it holds ("20s") is added to the time the peer's pinset reads
// empty after start, so the peer looks too slow for upgraded's verify
// deadline. Read at each start, so the fault can be switched on and off
// while the peer's parent keeps running.
const SlowStartFileEnv = "CLUSTERSIM_SLOW_START_FILE"

// slowStart returns the extra start delay the fault asks for, or 0.
func slowStart() time.Duration {
	p := os.Getenv(SlowStartFileEnv)
	if p == "" {
		return 0
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil || d < 0 {
		return 0
	}
	return d
}
