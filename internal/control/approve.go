package control

import (
	"context"
	"io"
	"net/http"

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
	s.awaitCommit(w, r, "the approval was not recorded (the same key twice counts once)", func() (int, any, bool) {
		ans := s.b.Plan(before.ID)
		if p := ans.Plan; p != nil && (p.Phase != plan.PhaseProposed || len(p.Approvals) > len(before.Approvals)) {
			return http.StatusOK, ans, true
		}
		return 0, nil, false
	}, func(ctx context.Context) error { return s.b.RepublishApproval(ctx, data) })
}

// Approve hands a signed approval or rejection to the daemon and returns the plan after it.
func (c *Client) Approve(ctx context.Context, envelope []byte) (*plan.Plan, error) {
	var ans PlanAnswer
	if err := c.do(ctx, http.MethodPost, "/v1/approve", bytesReader(envelope), &ans); err != nil {
		return nil, err
	}
	return ans.Plan, nil
}
