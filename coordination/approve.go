package coordination

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/plan"
)

// SealApproval signs an operator's decision ("approve" or "reject") on exactly
// the content of plan p.
func SealApproval(key crypto.PrivKey, p *plan.Plan, decision string) ([]byte, error) {
	b, err := json.Marshal(plan.ApprovalPayload{PlanID: p.ID, Content: plan.ContentHash(&p.Announcement), Decision: decision})
	if err != nil {
		return nil, fmt.Errorf("encoding approval: %w", err)
	}
	return envelope.Seal(key, plan.ApprovalType, b)
}

// validateApproval rejects at the edge what no daemon would accept: unsigned,
// forged, malformed or untrusted approvals. Whether it matches a proposed
// plan is checked against the plan state when it is applied.
func (c *Coordinator) validateApproval(_ context.Context, from peer.ID, data []byte) pubsub.ValidationResult {
	payload, signer, err := envelope.Open(data, plan.ApprovalType, c.trusted)
	if err == nil {
		err = json.Unmarshal(payload, &plan.ApprovalPayload{})
	}
	if err != nil {
		c.log.Warn("approval refused", zap.Stringer("from", from), zap.String("signer", signer.String()), zap.Error(err))
		c.rejected(fmt.Errorf("%w: %w", ErrNotTrusted, err))
		return pubsub.ValidationReject
	}
	return pubsub.ValidationAccept
}

// Approve takes an operator's signed approval or rejection: checked at once
// against this daemon's trust and the plan state (so the operator gets the
// reason of a refusal), then published; the raft leader records it.
func (c *Coordinator) Approve(ctx context.Context, data []byte) (*plan.Plan, error) {
	if _, signer, err := envelope.Open(data, plan.ApprovalType, c.trusted); err != nil {
		c.log.Warn("approval refused", zap.String("signer", signer.String()), zap.Error(err))
		return nil, fmt.Errorf("%w: %w", ErrNotTrusted, err)
	}
	var (
		p      *plan.Plan
		signer string
		err    error
	)
	c.cfg.FSM.View(func(s *plan.State) {
		var pl *plan.Plan
		pl, _, signer, err = s.OpenApproval(data, c.cfg.Clock())
		if pl != nil {
			p = pl.Clone()
		}
	})
	if err != nil {
		c.log.Warn("approval refused", zap.String("signer", signer), zap.Error(err))
		return nil, err
	}
	if _, dup := p.Approvals[signer]; dup {
		err := fmt.Errorf("%w: key %s already signed plan %s; it counts once (%d more approvals needed)", plan.ErrBadApproval, signer, p.ID, p.Missing())
		c.log.Warn("approval refused", zap.String("signer", signer), zap.Error(err))
		return nil, err
	}
	if err := c.approval.Publish(ctx, data); err != nil {
		return nil, fmt.Errorf("publishing approval: %w", err)
	}
	c.log.Info("approval published", zap.String("plan", p.ID), zap.String("signer", signer))
	return p, nil
}

// RepublishApproval sends an approval again while no leader recorded it.
func (c *Coordinator) RepublishApproval(ctx context.Context, data []byte) error {
	return c.approval.Publish(ctx, data)
}

// approvals records, on the leader, every approval that matches a proposed
// plan; replayed, stale or altered ones are logged and change nothing.
func (c *Coordinator) approvals(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-c.approval.Messages():
			if !ok {
				return
			}
			if !c.cfg.Raft.IsLeader() {
				continue
			}
			var (
				err    error
				dup    bool
				signer string
			)
			c.cfg.FSM.View(func(s *plan.State) {
				var p *plan.Plan
				p, _, signer, err = s.OpenApproval(m.Data, c.cfg.Clock())
				if err == nil {
					_, dup = p.Approvals[signer]
				}
			})
			if err != nil {
				c.log.Warn("approval ignored", zap.Stringer("from", m.From), zap.Error(err))
				continue
			}
			if dup {
				c.log.Warn("approval ignored: this key already approved the plan (counted once)", zap.String("signer", signer))
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.cfg.Raft.Apply(actx, plan.Command{Op: plan.OpApprove, Envelope: m.Data}.Encode())
			cancel()
			if err != nil {
				c.log.Warn("recording approval", zap.Error(err))
			}
		}
	}
}
