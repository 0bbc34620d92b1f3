package raftnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// maxMessage bounds a join or apply request or response.
const maxMessage = 4 << 20

// Codes in a response tell the caller whether to retry elsewhere.
const (
	codeNotLeader  = "not_leader"  // ask the leader instead; retry
	codeRejected   = "rejected"    // the FSM refused the command
	codeRaft       = "raft"        // raft failed; the outcome may be unknown
	codeBadRequest = "bad_request" // the request cannot be understood
)

type joinRequest struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs,omitempty"` // where the joiner listens, for the leader to reach it
	Forwarded bool     `json:"forwarded,omitempty"`
}

type applyRequest struct {
	Command []byte `json:"command"`
}

type response struct {
	Code     string          `json:"code,omitempty"`
	Error    string          `json:"error,omitempty"`
	Response json.RawMessage `json:"response,omitempty"`
}

// errUnreachable marks failures before a request was delivered, so retrying
// cannot apply a command twice.
var errUnreachable = errors.New("peer unreachable")

// call sends req to p on proto and decodes the answer into resp.
func call(ctx context.Context, h interface {
	NewStream(context.Context, peer.ID, ...protocol.ID) (network.Stream, error)
}, p peer.ID, proto protocol.ID, req any) (response, error) {
	var resp response
	s, err := h.NewStream(ctx, p, proto)
	if err != nil {
		return resp, fmt.Errorf("%w: opening %s stream to %s: %w", errUnreachable, proto, p, err)
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	// Abort the stream if ctx ends while we wait for the answer.
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if err := json.NewEncoder(s).Encode(req); err != nil {
		return resp, fmt.Errorf("sending %s request to %s: %w", proto, p, err)
	}
	if err := s.CloseWrite(); err != nil {
		return resp, fmt.Errorf("sending %s request to %s: %w", proto, p, err)
	}
	if err := json.NewDecoder(io.LimitReader(s, maxMessage)).Decode(&resp); err != nil {
		return resp, fmt.Errorf("reading %s answer from %s: %w", proto, p, err)
	}
	return resp, nil
}

// serve reads one request from s, answers with handle's response and
// closes the stream.
func serve[T any](s network.Stream, timeout time.Duration, handle func(peer.ID, T) response) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(timeout))
	var req T
	var resp response
	if err := json.NewDecoder(io.LimitReader(s, maxMessage)).Decode(&req); err != nil {
		resp = response{Code: codeBadRequest, Error: fmt.Sprintf("decoding request: %v", err)}
	} else {
		resp = handle(s.Conn().RemotePeer(), req)
	}
	if err := json.NewEncoder(s).Encode(resp); err != nil {
		s.Reset()
	}
}
