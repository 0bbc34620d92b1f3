package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
