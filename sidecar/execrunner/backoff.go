package execrunner

import "time"

// backoff spaces out restarts of a crashing peer: a peer that dies at once
// is retried ever more slowly, one that ran a while is retried quickly again.
type backoff struct {
	min, max    time.Duration
	stableAfter time.Duration
	cur         time.Duration // next delay; zero before the first one
}

// next returns the delay before the next restart, given how long the last
// process stayed up.
func (b *backoff) next(uptime time.Duration) time.Duration {
	if b.cur == 0 || uptime >= b.stableAfter {
		b.cur = b.min
	}
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d
}
