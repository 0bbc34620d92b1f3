package control

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/upgraded/upgraded/statebackup"
)

// BackupBackend is the daemon's side of `upgraded backup`. It is separate from Backend so that a backend without
// a backup store stays small; the server offers the backup routes only when its backend implements it.
type BackupBackend interface {
	// CreateBackup takes a live backup of the running peer's pinset now and verifies it by reading it back.
	CreateBackup(ctx context.Context) (*statebackup.Manifest, error)
	// ListBackups returns every stored backup, newest first.
	ListBackups() ([]*statebackup.Manifest, error)
	// VerifyBackup re-reads backup id and checks its sha256 and pin count against its manifest; a failure says why.
	VerifyBackup(ctx context.Context, id string) (*statebackup.Manifest, error)
	// RestoreBackup puts backup id back into the peer: it refuses (changing nothing) a backup that fails
	// verification or while a plan runs, and otherwise stops the peer, imports, starts it and checks the count.
	RestoreBackup(ctx context.Context, id string) (*RestoreReport, error)
	// PruneBackups applies the retention: the newest backups and every backup of the last plan are kept.
	PruneBackups(ctx context.Context) (*PruneReport, error)
}

// RestoreReport says what a restore did.
type RestoreReport struct {
	Backup *statebackup.Manifest `json:"backup"`
	// Pins is how many pins the peer answered with once restarted; -1 when the backup's count is unknown
	// (a state-folder copy) and the peer was only checked to answer.
	Pins int `json:"pins"`
	// Restored is where the backup went: "state import" or the state folder replaced.
	Restored string `json:"restored"`
	// Kept is where a replaced state folder was moved, for a state-folder restore.
	Kept string        `json:"kept,omitempty"`
	Took time.Duration `json:"took"`
}

// PruneReport lists the backups a prune removed and how many remain.
type PruneReport struct {
	Removed []*statebackup.Manifest `json:"removed"`
	Kept    int                     `json:"kept"`
}

func (s *Server) registerBackups(mux *http.ServeMux) {
	bb, ok := s.b.(BackupBackend)
	if !ok {
		none := func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusNotImplemented, errorBody{Error: "this daemon keeps no backups"})
		}
		mux.HandleFunc("/v1/backups", none)
		mux.HandleFunc("/v1/backups/", none)
		return
	}
	mux.HandleFunc("POST /v1/backups", func(w http.ResponseWriter, r *http.Request) {
		m, err := bb.CreateBackup(r.Context())
		answer(w, m, err)
	})
	mux.HandleFunc("GET /v1/backups", func(w http.ResponseWriter, _ *http.Request) {
		list, err := bb.ListBackups()
		if list == nil {
			list = []*statebackup.Manifest{}
		}
		answer(w, list, err)
	})
	mux.HandleFunc("POST /v1/backups/prune", func(w http.ResponseWriter, r *http.Request) {
		rep, err := bb.PruneBackups(r.Context())
		answer(w, rep, err)
	})
	mux.HandleFunc("POST /v1/backups/{id}/verify", func(w http.ResponseWriter, r *http.Request) {
		m, err := bb.VerifyBackup(r.Context(), r.PathValue("id"))
		answer(w, m, err)
	})
	mux.HandleFunc("POST /v1/backups/{id}/restore", func(w http.ResponseWriter, r *http.Request) {
		rep, err := bb.RestoreBackup(r.Context(), r.PathValue("id"))
		answer(w, rep, err)
	})
}

// answer writes v, or err with a status that tells a missing backup from one that is refused.
func answer(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, statebackup.ErrNotFound):
		writeJSON(w, http.StatusNotFound, errorBody{Error: err.Error()})
	default:
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: err.Error()})
	}
}

// CreateBackup asks the daemon for a live backup now.
func (c *Client) CreateBackup(ctx context.Context) (*statebackup.Manifest, error) {
	var m statebackup.Manifest
	if err := c.do(ctx, http.MethodPost, "/v1/backups", nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// ListBackups returns the daemon's backups, newest first.
func (c *Client) ListBackups(ctx context.Context) ([]*statebackup.Manifest, error) {
	var list []*statebackup.Manifest
	if err := c.do(ctx, http.MethodGet, "/v1/backups", nil, &list); err != nil {
		return nil, err
	}
	return list, nil
}

// VerifyBackup asks the daemon to verify backup id; the error says why it failed.
func (c *Client) VerifyBackup(ctx context.Context, id string) (*statebackup.Manifest, error) {
	var m statebackup.Manifest
	if err := c.do(ctx, http.MethodPost, "/v1/backups/"+url.PathEscape(id)+"/verify", nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// RestoreBackup asks the daemon to restore backup id into its peer and waits for the outcome.
func (c *Client) RestoreBackup(ctx context.Context, id string) (*RestoreReport, error) {
	var rep RestoreReport
	if err := c.do(ctx, http.MethodPost, "/v1/backups/"+url.PathEscape(id)+"/restore", nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// PruneBackups asks the daemon to apply its retention now.
func (c *Client) PruneBackups(ctx context.Context) (*PruneReport, error) {
	var rep PruneReport
	if err := c.do(ctx, http.MethodPost, "/v1/backups/prune", nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
