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
		p.Paused = false
		p.Control = fmt.Sprintf("aborted by %s at %s", who, at.UTC().Format(time.RFC3339))
		switch p.Phase {
		case PhaseProposed, PhasePreparing:
			s.end(p, PhaseFailed, "aborted by "+who+"; nothing was stopped", at)
		case PhaseSwitching:
			s.rollback(p, "aborted by "+who, at)
			if p.Proc() == Bootstrap {
				s.stepBootstrapRollback(p, at)
			}
		case PhaseRollingBack:
			return fmt.Errorf("plan %s is already rolling back", p.ID)
		}
	}
	p.Updated = at
	return nil
}
