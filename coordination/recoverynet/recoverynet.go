// Package recoverynet carries the requests of a recovery between daemons: one JSON request and one JSON answer per
// libp2p stream, on the daemons' private swarm. The daemon where `upgraded recover` runs asks every other daemon
// what state its host holds, then drives each through the recovery's steps.
package recoverynet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// Protocol is the stream protocol of recovery requests.
const Protocol protocol.ID = "/upgraded/recover/1.0.0"

// maxMessage bounds a request or an answer: inventories list backups, never pin data.
const maxMessage = 8 << 20

type request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

type response struct {
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Handler carries out one request from another daemon and returns what to answer. ctx ends when the server
// closes, not when the caller goes away: a step that changes the peer must not stop half way.
type Handler func(ctx context.Context, from peer.ID, op string, args json.RawMessage) (any, error)

// Config configures a Server.
type Config struct {
	Host host.Host
	// Allow says whether a daemon may ask anything: only daemons of this cluster (the private swarm already keeps
	// out whoever lacks the cluster secret).
	Allow   func(peer.ID) bool
	Handle  Handler
	Timeout time.Duration // bounds one request, the longest step included
	Log     *zap.Logger
}

// Server answers recovery requests until Close.
type Server struct {
	cfg Config
	svc *p2p.Service
}

// Serve registers the protocol on cfg.Host.
func Serve(cfg Config) (*Server, error) {
	if cfg.Host == nil || cfg.Allow == nil || cfg.Handle == nil || cfg.Log == nil {
		return nil, errors.New("recovery protocol: host, allow, handler and logger are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	s := &Server{cfg: cfg}
	s.svc = p2p.ServeProtocol(cfg.Host, Protocol, s.handleStream)
	return s, nil
}

// Close stops taking requests and waits for those being answered; safe twice.
func (s *Server) Close() { s.svc.Close() }

// handleStream answers one request; ctx ends at Close.
func (s *Server) handleStream(ctx context.Context, st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.cfg.Timeout + 5*time.Second))
	from := st.Conn().RemotePeer()
	var resp response
	var req request
	switch err := json.NewDecoder(io.LimitReader(st, maxMessage)).Decode(&req); {
	case err != nil:
		resp.Error = "decoding the request: " + err.Error()
	case !s.cfg.Allow(from):
		s.cfg.Log.Warn("refused a recovery request from a daemon that is not of this cluster",
			zap.Stringer("from", from), zap.String("op", req.Op))
		resp.Error = "refused: " + from.String() + " is not a daemon of this cluster"
	default:
		ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		out, err := s.cfg.Handle(ctx, from, req.Op, req.Args)
		cancel()
		resp = encode(out, err)
	}
	if err := json.NewEncoder(st).Encode(resp); err != nil {
		_ = st.Reset()
	}
}

func encode(out any, err error) response {
	if err != nil {
		return response{Error: err.Error()}
	}
	b, merr := json.Marshal(out)
	if merr != nil {
		return response{Error: "encoding the answer: " + merr.Error()}
	}
	return response{Result: b}
}

// RemoteError is an error the other daemon answered with.
type RemoteError struct {
	Peer peer.ID
	Op   string
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

// Call sends op with args to daemon p and decodes its answer into out (which may be nil).
func Call(ctx context.Context, h host.Host, p peer.ID, op string, args, out any) error {
	raw, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", op, err)
	}
	st, err := h.NewStream(ctx, p, Protocol)
	if err != nil {
		return fmt.Errorf("reaching daemon %s for %s: %w", p, op, err)
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	if err := json.NewEncoder(st).Encode(request{Op: op, Args: raw}); err != nil {
		return fmt.Errorf("sending %s to %s: %w", op, p, err)
	}
	if err := st.CloseWrite(); err != nil {
		return fmt.Errorf("sending %s to %s: %w", op, p, err)
	}
	var resp response
	if err := json.NewDecoder(io.LimitReader(st, maxMessage)).Decode(&resp); err != nil {
		return fmt.Errorf("reading the answer to %s from %s: %w", op, p, err)
	}
	if resp.Error != "" {
		return &RemoteError{Peer: p, Op: op, Msg: resp.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Result, out); err != nil {
		return fmt.Errorf("decoding the answer to %s from %s: %w", op, p, err)
	}
	return nil
}
