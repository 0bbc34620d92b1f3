package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// maxErrorBody bounds how much of an error answer is kept for the message.
const maxErrorBody = 4096

// Client talks to one peer's REST API. It is safe for concurrent use.
type Client struct {
	base       string
	httpClient *http.Client
	user, pass string
	auth       bool
}

// Option changes a Client built by NewClient.
type Option func(*Client)

// WithHTTPClient makes the client send its requests through hc (timeouts,
// TLS, a test transport). Without it a fresh http.Client with no overall
// timeout is used: pin streams can legitimately run for minutes, so callers
// bound each call with its context instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.httpClient = hc }
}

// WithBasicAuth sends the credentials of api.restapi.basic_auth_credentials.
func WithBasicAuth(user, pass string) Option {
	return func(c *Client) { c.user, c.pass, c.auth = user, pass, true }
}

// NewClient returns a client of the REST API at apiURL (see APIURL).
func NewClient(apiURL string, opts ...Option) *Client {
	// A transport of its own: CloseIdleConnections then lets go of this
	// peer's connections only.
	c := &Client{base: strings.TrimRight(apiURL, "/"),
		httpClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// CloseIdleConnections closes the client's connections to the peer that no
// request is using, including any it dialed and never used (a request that
// found another connection free first). The peer's HTTP server counts such a
// connection as new, and Go's http.Server.Shutdown waits up to 5 s for a new
// connection's first request: at N=50, one peer in two runs took 2 s to stop
// for that reason, and every other peer's membership waited for it.
func (c *Client) CloseIdleConnections() { c.httpClient.CloseIdleConnections() }

// APIError is an answer of the REST API with a non-2xx status. The peer
// writes its errors as {"code","message"}; other bodies become the message.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("cluster API answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// ID is a peer's description, as GET /id and GET /peers give it.
type ID struct {
	ID                    string   `json:"id"`
	Version               string   `json:"version"`
	Commit                string   `json:"commit"`
	RPCProtocolVersion    string   `json:"rpc_protocol_version"`
	PeerName              string   `json:"peername"`
	Error                 string   `json:"error"`
	Addresses             []string `json:"addresses"`
	ClusterPeers          []string `json:"cluster_peers"`
	ClusterPeersAddresses []string `json:"cluster_peers_addresses"`
	IPFS                  IPFSID   `json:"ipfs"`
}

// IPFSID is what the peer knows of the IPFS daemon behind it.
type IPFSID struct {
	Addresses []string `json:"addresses"`
	Error     string   `json:"error"`
}

// ID asks the peer who it is (GET /id).
func (c *Client) ID(ctx context.Context) (*ID, error) {
	var id ID
	if err := c.getJSON(ctx, "/id", &id); err != nil {
		return nil, err
	}
	if id.ID == "" {
		return nil, fmt.Errorf("GET %s/id: the answer has no peer id", c.base)
	}
	return &id, nil
}

// Health is the part of GET /id a health check reads.
type Health struct {
	ID           string   `json:"id"`
	Version      string   `json:"version"`
	ClusterPeers []string `json:"cluster_peers"`
}

// Health asks the peer who it is, which release it runs and which peers its
// consensus lists (GET /id), decoding nothing else: the verification polls
// it five times a second while the cluster restarts, and the rest of the
// answer (cluster_peers_addresses, every other peer's address) grows with
// the cluster.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	if err := c.getJSON(ctx, "/id", &h); err != nil {
		return nil, err
	}
	if h.ID == "" {
		return nil, fmt.Errorf("GET %s/id: the answer has no peer id", c.base)
	}
	return &h, nil
}

// Version asks the peer which release it runs (GET /version).
func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct {
		Version string `json:"version"`
	}
	if err := c.getJSON(ctx, "/version", &v); err != nil {
		return "", err
	}
	if v.Version == "" {
		return "", fmt.Errorf("GET %s/version: the answer has no version", c.base)
	}
	return v.Version, nil
}

// PeerIDs lists the IDs of the cluster's peers as this peer sees them (GET
// /peers), decoding nothing else of the answer. The health check polls it,
// and the answer grows with the square of the cluster: every entry lists
// every peer with its address, ~370 kB at 50 peers. Decoding all of it, as
// Peers does, was a sixth of a daemon's CPU while it verified its peer.
func (c *Client) PeerIDs(ctx context.Context) ([]string, error) {
	var ids []string
	err := streamEach(ctx, c, "/peers", nil, func(p *struct {
		ID string `json:"id"`
	}) error {
		ids = append(ids, p.ID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// Peers lists the cluster's peers as this peer sees them (GET /peers): a
// stream of objects from 1.x, one array from 0.14.5.
func (c *Client) Peers(ctx context.Context) ([]ID, error) {
	var peers []ID
	err := streamEach(ctx, c, "/peers", nil, func(id *ID) error {
		peers = append(peers, *id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return peers, nil
}

// Pin adds cid to the pinset under name (POST /pins/{cid}?name=...).
func (c *Client) Pin(ctx context.Context, cid, name string) error {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	return c.do(ctx, http.MethodPost, "/pins/"+url.PathEscape(cid), q)
}

// Unpin removes cid from the pinset (DELETE /pins/{cid}).
func (c *Client) Unpin(ctx context.Context, cid string) error {
	return c.do(ctx, http.MethodDelete, "/pins/"+url.PathEscape(cid), nil)
}

// RemovePeer removes a peer from the cluster (DELETE /peers/{id}). A crdt
// cluster refuses with a 500 *APIError: its peers leave by being stopped.
func (c *Client) RemovePeer(ctx context.Context, peerID string) error {
	return c.do(ctx, http.MethodDelete, "/peers/"+url.PathEscape(peerID), nil)
}

// do sends a request whose answer body does not matter beyond its status.
func (c *Client) do(ctx context.Context, method, path string, q url.Values) error {
	resp, err := c.send(ctx, method, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Drain so the connection can be reused.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("%s %s%s: reading the answer: %w", method, c.base, path, err)
	}
	return nil
}

func (c *Client) getJSON(ctx context.Context, path string, into any) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("GET %s%s: decoding the answer: %w", c.base, path, err)
	}
	return nil
}

// send performs one request and turns a non-2xx answer into *APIError. The
// caller closes the body of a nil-error response.
func (c *Client) send(ctx context.Context, method, path string, q url.Values) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, u, err)
	}
	if c.auth {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, fmt.Errorf("%s %s: %w", method, u, readAPIError(resp))
}

func readAPIError(resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	apiErr := &APIError{Status: resp.StatusCode}
	var parsed struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &parsed) == nil && parsed.Message != "" {
		apiErr.Message = parsed.Message
	} else {
		apiErr.Message = string(bytes.TrimSpace(body))
	}
	return apiErr
}

// IsUnreachable tells whether err means the REST API is not up: the
// connection was refused, reset or timed out, or the peer hung up before
// answering. An answer of the API, even an error one, is not unreachable.
func IsUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return false
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EPIPE} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var urlErr *url.Error
	return errors.As(err, &urlErr) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
}
