package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination"
	"github.com/upgraded/upgraded/coordination/plan"
)

// Operate implements control.PlanOps: pause, resume or abort a plan through
// the raft group, recording which host's operator asked.
func (d *Daemon) Operate(ctx context.Context, id, op string) (*plan.Plan, error) {
	var cmd plan.Command
	switch op {
	case "pause":
		cmd.Op = plan.OpPause
	case "resume":
		cmd.Op = plan.OpResume
	case "abort":
		cmd.Op = plan.OpAbort
	default:
		return nil, fmt.Errorf("unknown operation %q", op)
	}
	if id == "" {
		d.fsm.View(func(s *plan.State) { id = s.Current })
		if id == "" {
			return nil, errors.New("no plan is running")
		}
	}
	who := d.svc.PeerName
	if who == "" {
		who = plan.ShortID(d.node.ID().String())
	}
	cmd.PlanID, cmd.Reason = id, "the operator on "+who
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	before := ""
	if p := d.fsm.Plan(id); p != nil {
		before = p.Control
	}
	if _, err := d.raft.Apply(actx, cmd.Encode()); err != nil {
		return nil, fmt.Errorf("%s plan %s: %w", op, id, err)
	}
	d.log.Warn("plan "+op+" requested by the local operator", zap.String("plan", id))
	// Applied on the leader; wait until this daemon's copy shows it too.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if p := d.fsm.Plan(id); p != nil && p.Control != before {
			return p, nil
		}
		select {
		case <-actx.Done():
			return d.fsm.Plan(id), nil
		case <-tick.C:
		}
	}
}

// DryRun implements control.DryRunner.
func (d *Daemon) DryRun(env []byte) (*coordination.DryRun, error) { return d.coord.DryRun(env) }
