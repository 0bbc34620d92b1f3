package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// unhealthyGrace is how long a verified peer may look unhealthy (a peer list
// catching up) before its batch is failed.
const unhealthyGrace = 2 * time.Second

// watchBatch keeps checking this host while its batch waits (the settle time,
// or the canaries' soak): a peer that degrades before the next batch starts
// fails the plan, which rolls back what was touched and leaves the rest alone.
func (a *Agent) watchBatch(ctx context.Context, p *plan.Plan, expected, restarts int) error {
	tick := time.NewTicker(a.cfg.PollInterval)
	defer tick.Stop()
	var since time.Time
	for {
		cur := a.cfg.Plans.Plan(p.ID)
		if cur == nil || cur.Phase != plan.PhaseSwitching || !slices.Contains(cur.Batch, a.cfg.HostID) {
			return nil
		}
		_, why, err := a.healthy(ctx, p.Version, expected, a.expectedPeers(cur), restarts)
		switch {
		case err != nil:
			return a.fail(p.ID, plan.StepFailed, fmt.Errorf("while its batch waited: %w", err))
		case why == "":
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) > unhealthyGrace:
			a.log.Warn("peer degraded while its batch waited", zap.String("plan", p.ID), zap.String("why", why))
			return a.fail(p.ID, plan.StepFailed, fmt.Errorf("unhealthy while its batch waited: %s", why))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
