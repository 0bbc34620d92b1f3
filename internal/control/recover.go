package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/upgraded/upgraded/statebackup"
)

// RecoverBackend is the daemon's side of `upgraded recover`; the server offers the route only when its backend
// implements it.
type RecoverBackend interface {
	// Recover asks every daemon what state its host holds, chooses the best copy and plans the recovery; unless
	// req.DryRun it then carries the plan out across the hosts. The report is returned with the error too, so
	// that the caller can show how far it went.
	Recover(ctx context.Context, req RecoverRequest) (*RecoverReport, error)
}

// RecoverRequest is what `upgraded recover` asks for.
type RecoverRequest struct {
	DryRun bool `json:"dry_run"`
	// From is an export file on this host to rebuild from instead of the best copy the hosts hold (absolute).
	From string `json:"from,omitempty"`
	// Expect is the copy the operator confirmed: the recovery is refused, changing nothing, if another is chosen now.
	Expect *statebackup.Source `json:"expect,omitempty"`
}

// StepResult is how one step of a recovery went.
type StepResult struct {
	Step   statebackup.Step `json:"step"`
	OK     bool             `json:"ok"`
	Detail string           `json:"detail,omitempty"`
	Error  string           `json:"error,omitempty"`
}

// RecoverReport is what a recovery found, chose, planned and did.
type RecoverReport struct {
	ID          string                      `json:"id,omitempty"` // the journal name on every host; empty for a dry run
	DryRun      bool                        `json:"dry_run"`
	Inventories []statebackup.HostInventory `json:"inventories"`
	Choice      *statebackup.Choice         `json:"choice,omitempty"`
	Plan        *statebackup.RecoveryPlan   `json:"plan,omitempty"`
	Results     []StepResult                `json:"results,omitempty"`
	Error       string                      `json:"error,omitempty"`
}

func (s *Server) registerRecover(mux *http.ServeMux) {
	rb, ok := s.b.(RecoverBackend)
	if !ok {
		mux.HandleFunc("/v1/recover", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusNotImplemented, errorBody{Error: "this daemon cannot recover"})
		})
		return
	}
	mux.HandleFunc("POST /v1/recover", func(w http.ResponseWriter, r *http.Request) {
		var req RecoverRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "decoding the recover request: " + err.Error()})
			return
		}
		rep, err := rb.Recover(r.Context(), req)
		if rep == nil {
			rep = &RecoverReport{DryRun: req.DryRun}
		}
		if err != nil {
			rep.Error = err.Error()
		}
		writeJSON(w, http.StatusOK, rep) // a failed recovery's report says how far it went
	})
}

// ErrRecoverFailed is returned with the report of a recovery that could not be planned or carried out.
var ErrRecoverFailed = errors.New("recovery failed")

// Recover asks the daemon to plan (and unless req.DryRun, carry out) a recovery, and waits for its report. A
// recovery that failed returns its report and an error wrapping ErrRecoverFailed with the reason.
func (c *Client) Recover(ctx context.Context, req RecoverRequest) (*RecoverReport, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var rep RecoverReport
	if err := c.do(ctx, http.MethodPost, "/v1/recover", bytesReader(body), &rep); err != nil {
		return nil, err
	}
	if rep.Error != "" {
		return &rep, errors.Join(ErrRecoverFailed, errors.New(rep.Error))
	}
	return &rep, nil
}
