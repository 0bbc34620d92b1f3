package control

import (
	"context"
	"io"
	"net/http"

	"github.com/upgraded/upgraded/coordination"

	"github.com/upgraded/upgraded/coordination/plan"
)

// PlanOps is what a daemon offers to hold, resume or abort the current plan.
type PlanOps interface {
	// Operate applies op ("pause", "resume" or "abort") to plan id ("" = the current plan).
	Operate(ctx context.Context, id, op string) (*plan.Plan, error)
}

// DryRunner says what the cluster would do with a signed announcement.
type DryRunner interface {
	DryRun(envelope []byte) (*coordination.DryRun, error)
}

func (s *Server) registerPlanOps(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/dry-run", func(w http.ResponseWriter, r *http.Request) {
		dr, ok := s.b.(DryRunner)
		if !ok {
			writeJSON(w, http.StatusNotImplemented, errorBody{Error: "this daemon cannot dry-run"})
			return
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
			return
		}
		d, err := dr.DryRun(data)
		if err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	for _, op := range []string{"pause", "resume", "abort"} {
		mux.HandleFunc("POST /v1/"+op, func(w http.ResponseWriter, r *http.Request) {
			ops, ok := s.b.(PlanOps)
			if !ok {
				writeJSON(w, http.StatusNotImplemented, errorBody{Error: "this daemon cannot " + op + " plans"})
				return
			}
			p, err := ops.Operate(r.Context(), r.URL.Query().Get("plan"), op)
			if err != nil {
				writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, PlanAnswer{Plan: p})
		})
	}
}

// DryRun asks the daemon what the cluster would do with a signed announcement.
func (c *Client) DryRun(ctx context.Context, envelope []byte) (*coordination.DryRun, error) {
	var d coordination.DryRun
	return &d, c.do(ctx, http.MethodPost, "/v1/dry-run", bytesReader(envelope), &d)
}

// Operate asks the daemon to pause, resume or abort plan id ("" = current).
func (c *Client) Operate(ctx context.Context, id, op string) (*plan.Plan, error) {
	var ans PlanAnswer
	path := "/v1/" + op
	if id != "" {
		path += "?plan=" + id
	}
	if err := c.do(ctx, http.MethodPost, path, nil, &ans); err != nil {
		return nil, err
	}
	return ans.Plan, nil
}
