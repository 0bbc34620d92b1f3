package plan

import (
	"fmt"
	"time"
)

// control applies an operator's pause, resume or abort of the current plan.
// c.Reason says who asked.
func (s *State) control(c Command, at time.Time) error {
	p, ok := s.Plans[c.PlanID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoPlan, c.PlanID)
	}
	if p.Phase.Terminal() {
		return fmt.Errorf("plan %s has ended (%s)", p.ID, p.Phase)
	}
	who := c.Reason
	if who == "" {
		who = "an operator"
	}
	switch c.Op {
	case OpPause:
		if p.Paused {
			return nil
		}
		p.Paused, p.PausedAt = true, at
		p.Control = fmt.Sprintf("paused by %s at %s", who, at.UTC().Format(time.RFC3339))
	case OpResume:
		if !p.Paused {
			return fmt.Errorf("plan %s is not paused", p.ID)
		}
		held := at.Sub(p.PausedAt)
		p.Paused, p.PausedAt = false, time.Time{}
		if !p.Deadline.IsZero() {
			p.Deadline = p.Deadline.Add(held)
		}
		if !p.NextBatchAt.IsZero() {
			p.NextBatchAt = p.NextBatchAt.Add(held)
		}
		p.Control = fmt.Sprintf("resumed by %s at %s after %s", who, at.UTC().Format(time.RFC3339), held.Round(time.Second))
		s.advance(p, at)
	case OpAbort:
		// Every phase that is not over is named: a phase this switch missed
		// would record the abort and leave the plan running (a scheduled plan
		// did, and started at its time).
		switch p.Phase {
		case PhaseProposed, PhaseScheduled, PhasePreparing, PhaseSwitching:
		case PhaseRollingBack:
			return fmt.Errorf("plan %s is already rolling back", p.ID)
		default:
			return fmt.Errorf("plan %s cannot be aborted while %s", p.ID, p.Phase)
		}
		p.Paused = false
		p.Control = fmt.Sprintf("aborted by %s at %s", who, at.UTC().Format(time.RFC3339))
		if p.Phase == PhaseSwitching && !p.Arming() {
			s.rollback(p, "aborted by "+who, at)
			if p.Proc() == Bootstrap {
				s.stepBootstrapRollback(p, at)
			}
		} else {
			s.end(p, PhaseFailed, "aborted by "+who+"; nothing was stopped", at)
		}
	}
	p.Updated = at
	return nil
}
