package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// A daemon learns the others' addresses from their advertisements, and the
// raft leader can only reach a member whose address it holds. At 100 daemons
// on a loaded machine a newly elected leader held no address for 28 of its 99
// members ("failed to dial: no addresses"): their advertisements had been
// dropped by overloaded gossipsub queues, and the periodic ones come every
// 160 s once a node has been quiet. Those members heard from no leader, so
// their progress reports failed ("no raft leader") and the plan ran out of
// time with every peer verified. A member that has heard from no leader
// for leaderlessAdvertAfter advertises again (rate-limited by the node), so
// that a leader without its address learns it, and asks to be added to the
// group again, in case the group forgot it.
const leaderlessAdvertAfter = 5 * time.Second

// advertiseWhileLeaderless calls advertise every after for as long as
// hasLeader says no, checking every tick, until ctx ends.
func advertiseWhileLeaderless(ctx context.Context, hasLeader func() bool, advertise func(), after, tick time.Duration, log *zap.Logger) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var missed, since time.Time // when the leader was first missed; last advertised for
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if hasLeader() {
				missed, since = time.Time{}, time.Time{}
				continue
			}
			if missed.IsZero() {
				missed, since = now, now
				continue
			}
			if now.Sub(since) < after {
				continue
			}
			// Said once per absence: a daemon joining a big group waits minutes.
			lvl := zap.DebugLevel
			if since.Equal(missed) {
				lvl = zap.InfoLevel
			}
			log.Log(lvl, "no raft leader heard from for a while: advertising this daemon's addresses again and asking to be a member again, in case the leader lacks them or forgot it",
				zap.Duration("for", now.Sub(missed).Round(time.Second)))
			advertise()
			since = now
		}
	}
}
