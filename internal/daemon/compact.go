package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Raft log compaction of the daemons' group, done while no plan runs.
//
// When 100 daemons start together, each of the 99 joins is a configuration
// entry listing every member so far. With raft's own schedule (a snapshot
// after 8192 entries) the log was never compacted, and the leader sent
// every newcomer the whole log from its first entry, 64 entries a request:
// in one N=100 run its heap grew to ~39 MB during the joins and it idled at
// 45 MB resident afterwards (the median daemon 36), 3 MB of it raft.db's
// pages, mapped by bolt and read for every newcomer. Compacted every 64
// entries, a newcomer is sent a snapshot and the entries after it, and the
// leader's raft.db pages were 0.5 MB (1.5-3.0 MB in four runs before).
//
// Not during a plan: raft's own schedule (64 entries, looked for every
// 5-10 s) had every daemon write snapshots while 100 hosts staged releases
// and reported progress, and members more than 64 entries behind were sent
// the whole state instead of the entries; that N=100 run prepared in 2m20
// (1m09-1m34 before) and took 2.1 s to commit the announcement.
const (
	compactEvery = 64
	compactCheck = 5 * time.Second
)

// compactWhileIdle calls compact every check while busy says no plan runs,
// until ctx ends.
func compactWhileIdle(ctx context.Context, busy func() bool, compact func() (bool, error), check time.Duration, log *zap.Logger) {
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if busy() {
			continue
		}
		took, err := compact()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("compacting the raft log", zap.Error(err))
		case took:
			log.Debug("compacted the raft log: snapshot of the plan state taken")
		}
	}
}
