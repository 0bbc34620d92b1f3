package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/cluster"
)

type runningPeer struct{}

func (runningPeer) Start(context.Context, sidecar.StartOptions) error { return nil }
func (runningPeer) Stop(context.Context) error                        { return nil }
func (runningPeer) Status(context.Context) (sidecar.Status, error) {
	return sidecar.Status{Running: true}, nil
}

func golden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "samples", "1.1.6-crdt", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Verification waits for the peer list (crdt membership lags by seconds)
// without reading the whole pinset at every poll once it was complete.
func TestVerifyCountsThePinsetOnceWhileThePeerListCatchesUp(t *testing.T) {
	id, allocs, peers := golden(t, "get-id.json"), golden(t, "get-allocations.ndjson"), golden(t, "get-peers.ndjson")
	var expected []string
	sc := bufio.NewScanner(bytes.NewReader(peers))
	for sc.Scan() {
		var p struct{ ID string }
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		expected = append(expected, p.ID)
	}
	partial := peers[:bytes.IndexByte(peers, '\n')+1] // the peer itself only, at first
	var pinReads, peerReads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/id":
			w.Write(id)
		case "/allocations":
			pinReads.Add(1)
			w.Write(allocs)
		case "/peers":
			if peerReads.Add(1) <= 5 {
				w.Write(partial)
			} else {
				w.Write(peers)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	a := &Agent{log: zap.NewNop(), cfg: Config{API: cluster.NewClient(srv.URL), Runner: runningPeer{}, PollInterval: 5 * time.Millisecond}}
	pins, err := a.verifyWithin(context.Background(), 10*time.Second, "1.1.6", 3, expected, 0)
	if err != nil {
		t.Fatal(err)
	}
	if pins != 3 {
		t.Fatalf("verified with %d pins, want 3", pins)
	}
	if n := peerReads.Load(); n != 6 {
		t.Fatalf("peer list read %d times, want 6 (5 partial, then whole)", n)
	}
	if n := pinReads.Load(); n != 1 {
		t.Fatalf("pinset read %d times while waiting for the peer list, want once", n)
	}
}

// While /id lists fewer peers than expected, verification does not read
// /peers (an RPC to every peer and ~N² bytes); once /id lists them all,
// /peers is still the proof; and a release whose /id lists no
// cluster_peers is verified from /peers alone.
func TestVerifyReadsThePeerListOnceTheIDListsEveryPeer(t *testing.T) {
	id, allocs, peers := golden(t, "get-id.json"), golden(t, "get-allocations.ndjson"), golden(t, "get-peers.ndjson")
	var whole struct {
		ID           string   `json:"id"`
		ClusterPeers []string `json:"cluster_peers"`
	}
	if err := json.Unmarshal(id, &whole); err != nil || len(whole.ClusterPeers) != 3 {
		t.Fatalf("golden /id: %v, %q", err, whole.ClusterPeers)
	}
	// withPeers is the golden /id with cluster_peers replaced (absent when nil).
	withPeers := func(list []string) []byte {
		var m map[string]any
		if err := json.Unmarshal(id, &m); err != nil {
			t.Fatal(err)
		}
		if list == nil {
			delete(m, "cluster_peers")
		} else {
			m["cluster_peers"] = list
		}
		b, _ := json.Marshal(m)
		return b
	}
	partial := peers[:bytes.IndexByte(peers, '\n')+1]
	run := func(t *testing.T, idAnswer func(n int32) []byte, peersAnswer func(n int32) []byte) (idReads, peerReads int32) {
		var ids, prs atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/id":
				w.Write(idAnswer(ids.Add(1)))
			case "/allocations":
				w.Write(allocs)
			case "/peers":
				w.Write(peersAnswer(prs.Add(1)))
			default:
				http.NotFound(w, r)
			}
		}))
		defer srv.Close()
		a := &Agent{log: zap.NewNop(), cfg: Config{API: cluster.NewClient(srv.URL), Runner: runningPeer{}, PollInterval: 5 * time.Millisecond}}
		if _, err := a.verifyWithin(context.Background(), 10*time.Second, "1.1.6", 3, whole.ClusterPeers, 0); err != nil {
			t.Fatal(err)
		}
		return ids.Load(), prs.Load()
	}

	t.Run("id lags", func(t *testing.T) {
		ids, prs := run(t, func(n int32) []byte {
			if n <= 5 {
				return withPeers([]string{whole.ID})
			}
			return id
		}, func(n int32) []byte {
			if n <= 2 { // /peers may lag /id: it is still waited for
				return partial
			}
			return peers
		})
		if ids != 8 || prs != 3 {
			t.Fatalf("read /id %d and /peers %d times, want 8 and 3: /peers only once /id listed every peer", ids, prs)
		}
	})
	t.Run("no cluster_peers", func(t *testing.T) {
		ids, prs := run(t, func(int32) []byte { return withPeers(nil) }, func(n int32) []byte {
			if n <= 2 {
				return partial
			}
			return peers
		})
		if ids != 3 || prs != 3 {
			t.Fatalf("read /id %d and /peers %d times, want 3 and 3", ids, prs)
		}
	})
}

func TestDescribeNotSeenNamesAFew(t *testing.T) {
	if got := describeNotSeen([]string{"*a", "*b"}, 3); got != "cluster peers not seen: *a, *b" {
		t.Errorf("two: %q", got)
	}
	many := []string{"*a", "*b", "*c", "*d", "*e", "*f", "*g"}
	if got := describeNotSeen(many, 99); got != "cluster peers not seen: 7 of 99 (*a, *b, *c, *d, *e, ...)" {
		t.Errorf("seven: %q", got)
	}
}

// stopObserver is a runner whose Stop waits (up to 2 s) for the peer's
// server to hold no connection open, and records how many it still held.
type stopObserver struct {
	runningPeer
	open *atomic.Int32
	left int32
}

func (s *stopObserver) Stop(context.Context) error {
	deadline := time.Now().Add(2 * time.Second)
	for s.open.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.left = s.open.Load()
	return nil
}

// The agent lets go of its idle connections to the peer before stopping it:
// the peer's clean shutdown (Go's http.Server.Shutdown) waits for
// connections that are not idle on its side, and a connection the agent's
// transport dialed but never used is one of those.
func TestStoppingThePeerClosesTheAgentsIdleConnections(t *testing.T) {
	var open atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(golden(t, "get-id.json"))
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	runner := &stopObserver{open: &open}
	a := &Agent{log: zap.NewNop(), cfg: Config{API: cluster.NewClient(srv.URL), Runner: runner}}
	if _, err := a.cfg.API.ID(context.Background()); err != nil {
		t.Fatal(err)
	}
	if open.Load() != 1 {
		t.Fatalf("%d connections open after a request, want the one kept alive", open.Load())
	}
	if err := a.stopRunner(context.Background()); err != nil {
		t.Fatal(err)
	}
	if runner.left != 0 {
		t.Fatalf("the peer was stopped with %d of the agent's connections open", runner.left)
	}
}
