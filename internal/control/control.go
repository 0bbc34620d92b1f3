// Package control is the local control API of a running daemon: HTTP over a
// unix socket in the config folder (mode 0600, no port on the network), used
// by the CLI for announce and status.
package control

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// Status is what `upgraded status` shows.
type Status struct {
	Self     Self                  `json:"self"`
	Leader   string                `json:"leader"`
	Members  []string              `json:"members"`
	Voters   []string              `json:"voters,omitempty"` // the members that vote in the raft group
	Hosts    map[string]*plan.Host `json:"hosts"`
	Plan     *plan.Plan            `json:"plan,omitempty"` // the current plan, or the last one
	Rejected map[string]string     `json:"rejected,omitempty"`
}

// Self describes the daemon answering.
type Self struct {
	ID          string   `json:"id"`
	Addrs       []string `json:"addrs"`
	ClusterPeer string   `json:"cluster_peer"`
	// Connected is how many of the other registered daemons the swarm has a
	// connection to now.
	Connected int `json:"connected"`
}

// PlanAnswer is a plan, or why its announcement was refused.
type PlanAnswer struct {
	Plan     *plan.Plan `json:"plan,omitempty"`
	Rejected string     `json:"rejected,omitempty"`
}

// Backend is the daemon behind the socket.
type Backend interface {
	Status() Status
	// Announce checks a signed announcement and hands it to the raft leader
	// or, when none takes it, publishes it. A non-nil answer is the leader's:
	// the plan or refusal it committed; nil means "watch the plan state".
	Announce(ctx context.Context, envelope []byte) (*plan.Announcement, *PlanAnswer, error)
	// Republish sends an accepted announcement again.
	Republish(ctx context.Context, envelope []byte) error
	Plan(id string) PlanAnswer
	// Approve checks a signed approval or rejection and publishes it.
	Approve(ctx context.Context, envelope []byte) (*plan.Plan, error)
	// RepublishApproval sends an accepted approval again.
	RepublishApproval(ctx context.Context, envelope []byte) error
	// Changes returns a channel that receives after the plan state changed
	// (coalesced; nil: never), and a func that stops it.
	Changes() (<-chan struct{}, func())
}

// Server serves the control API.
type Server struct {
	b    Backend
	path string
	log  *zap.Logger
	srv  *http.Server
	ln   net.Listener
	// AckTimeout bounds how long announce waits for the plan to be committed.
	AckTimeout time.Duration
	// IdleTimeout closes a client's kept-alive connection after this long
	// without a request (default 30s), so that a script or monitor that
	// never closes its connections does not pile them up in the daemon.
	IdleTimeout time.Duration
	poll        time.Duration // awaitCommit's look besides the changes; republishing is paced by it
}

// Listen creates the socket (replacing a stale one) with mode 0600; on Linux
// it also refuses connections from any user but the daemon's (and root).
func Listen(path string, b Backend, log *zap.Logger) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("another daemon is already serving %s", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting control socket %s: %w", path, err)
	}
	s := &Server{b: b, path: path, log: log.Named("control"), AckTimeout: 15 * time.Second, IdleTimeout: 30 * time.Second, poll: 250 * time.Millisecond}
	s.ln = ownerOnly(ln, s.log)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("POST /v1/announce", s.announce)
	mux.HandleFunc("GET /v1/plans/{id}", s.plan)
	mux.HandleFunc("POST /v1/approve", s.approve)
	s.registerPlanOps(mux)
	s.registerRecover(mux)
	s.registerBackups(mux)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Serve answers until Close.
func (s *Server) Serve() error {
	s.srv.IdleTimeout = s.IdleTimeout
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving control socket: %w", err)
	}
	return nil
}

// Close stops serving and removes the socket; safe twice.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if rmErr := os.Remove(s.path); rmErr != nil && !os.IsNotExist(rmErr) && err == nil {
		err = rmErr
	}
	return err
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	ans := s.b.Plan(r.PathValue("id"))
	if ans.Plan == nil && ans.Rejected == "" {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "no such plan"})
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// announce hands the envelope to the raft leader through the daemon and
// answers with the plan or refusal the leader committed. When no leader took
// it, the daemon published it: announce then waits until this daemon's plan
// state holds the plan or its refusal, publishing again meanwhile.
func (s *Server) announce(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "reading announcement: " + err.Error()})
		return
	}
	a, ans, err := s.b.Announce(r.Context(), data)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: err.Error()})
		return
	}
	if ans != nil {
		code, body := s.announced(a.ID, *ans, start, "raft leader")
		writeJSON(w, code, body)
		return
	}
	s.awaitCommit(w, r, "no raft leader took the announcement", func() (int, any, bool) {
		ans := s.b.Plan(a.ID)
		if ans.Plan == nil && ans.Rejected == "" {
			return 0, nil, false
		}
		code, body := s.announced(a.ID, ans, start, "plan state")
		return code, body, true
	}, func(ctx context.Context) error { return s.b.Republish(ctx, data) })
}

// announced is the answer to an announcement whose plan or refusal is
// committed; by says where this daemon learnt it.
func (s *Server) announced(id string, ans PlanAnswer, start time.Time, by string) (int, any) {
	if ans.Rejected != "" || ans.Plan == nil {
		return http.StatusUnprocessableEntity, errorBody{Error: "refused by the cluster: " + cmp.Or(ans.Rejected, "no plan "+id)}
	}
	s.log.Info("announced plan is in the plan state", zap.String("plan", id), zap.String("phase", string(ans.Plan.Phase)),
		zap.Duration("took", time.Since(start)), zap.String("from", by))
	return http.StatusOK, ans
}

// awaitCommit answers once done says the plan state holds what was sent,
// publishing it again every two seconds meanwhile (an election may have
// been under way), or answers a timeout naming what did not happen. It looks
// again at each change of the plan state, so that the answer leaves as soon
// as the commit is applied here (a 50 ms poll cost N=3 half of its announce
// time), and on a slow tick that also paces the republishing.
func (s *Server) awaitCommit(w http.ResponseWriter, r *http.Request, notDone string,
	done func() (int, any, bool), republish func(context.Context) error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.AckTimeout)
	defer cancel()
	changed, stop := s.b.Changes() // before the first look, so no change falls between
	defer stop()
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	last := time.Now()
	for {
		if code, body, ok := done(); ok {
			writeJSON(w, code, body)
			return
		}
		if time.Since(last) > 2*time.Second {
			last = time.Now()
			if err := republish(ctx); err != nil {
				s.log.Debug("publishing again", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			writeJSON(w, http.StatusGatewayTimeout, errorBody{Error: notDone + " within " + s.AckTimeout.String() + " (are the other daemons up?)"})
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to a daemon's control socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client of the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{path: path, http: &http.Client{Transport: tr}}
}

// Close closes the client's idle connections to the daemon. A client that
// is not closed keeps them until the daemon's idle timeout ends them.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// ErrNoDaemon means nothing answers on the socket.
var ErrNoDaemon = errors.New("no daemon answering")

func (c *Client) do(ctx context.Context, method, p string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://upgraded"+p, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w on %s (is `upgraded daemon` running with this config folder?): %w", ErrNoDaemon, c.path, err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return errors.New(e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status asks for the daemon's view.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Announce hands a signed announcement to the daemon and returns the committed plan.
func (c *Client) Announce(ctx context.Context, envelope []byte) (*plan.Plan, error) {
	var ans PlanAnswer
	if err := c.do(ctx, http.MethodPost, "/v1/announce", bytesReader(envelope), &ans); err != nil {
		return nil, err
	}
	return ans.Plan, nil
}

// Plan returns a plan by id.
func (c *Client) Plan(ctx context.Context, id string) (*PlanAnswer, error) {
	var ans PlanAnswer
	return &ans, c.do(ctx, http.MethodGet, "/v1/plans/"+id, nil, &ans)
}
