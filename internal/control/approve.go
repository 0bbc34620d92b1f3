package control

import (
	"context"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// approve publishes a signed approval and waits until the plan state shows
// it (the key counted, or the plan moved on), publishing again meanwhile.
func (s *Server) approve(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "reading approval: " + err.Error()})
		return
	}
	before, err := s.b.Approve(r.Context(), data)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.AckTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		ans := s.b.Plan(before.ID)
		if p := ans.Plan; p != nil && (p.Phase != plan.PhaseProposed || len(p.Approvals) > len(before.Approvals)) {
			writeJSON(w, http.StatusOK, ans)
			return
		}
		if time.Since(last) > 2*time.Second {
			last = time.Now()
			if err := s.b.RepublishApproval(ctx, data); err != nil {
				s.log.Debug("republishing approval", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: "the approval was not recorded within " + s.AckTimeout.String() + " (the same key twice counts once)"})
			return
		case <-tick.C:
		}
	}
}

// Approve hands a signed approval or rejection to the daemon and returns the plan after it.
func (c *Client) Approve(ctx context.Context, envelope []byte) (*plan.Plan, error) {
	var ans PlanAnswer
	if err := c.do(ctx, http.MethodPost, "/v1/approve", bytesReader(envelope), &ans); err != nil {
		return nil, err
	}
	return ans.Plan, nil
}
