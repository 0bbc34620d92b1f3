package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// peersAnswer is GET /peers of a 1.x cluster of n peers, shaped like the
// 1.1.6 capture: every entry lists every peer and the others' addresses.
func peersAnswer(tb testing.TB, n int) []byte {
	tb.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("12D3KooW%044d", i)
	}
	var out []byte
	for i, id := range ids {
		var addrs []string
		for j, other := range ids {
			if j != i {
				addrs = append(addrs, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", 24000+j, other))
			}
		}
		b, err := json.Marshal(map[string]any{
			"id": id, "addresses": []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", 24000+i, id)},
			"cluster_peers": ids, "cluster_peers_addresses": addrs, "version": "1.1.6", "commit": "",
			"rpc_protocol_version": "/ipfscluster/1.0/rpc", "error": "", "peername": "vm",
			"ipfs": map[string]any{"addresses": nil, "error": "Post \"http://127.0.0.1:5001/api/v0/id\": dial tcp 127.0.0.1:5001: connect: connection refused"},
		})
		if err != nil {
			tb.Fatal(err)
		}
		out = append(append(out, b...), '\n')
	}
	return out
}

// answering returns a client of a local server that answers body to every request.
func answering(b *testing.B, body []byte) *Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(srv.Close)
	return NewClient(srv.URL)
}

// BenchmarkPeerList reads a 50-peer cluster's /peers from a local server, as
// the health check does five times a second: with every field (Peers) and
// with the IDs only (PeerIDs). B/op and allocs/op are the figures to read.
func BenchmarkPeerList(b *testing.B) {
	const n = 50
	body := peersAnswer(b, n)
	c := answering(b, body)
	ctx := context.Background()
	b.Logf("answer of %d peers: %d bytes", n, len(body))
	b.Run("Peers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, err := c.Peers(ctx); err != nil || len(p) != n {
				b.Fatal(len(p), err)
			}
		}
	})
	b.Run("PeerIDs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p, err := c.PeerIDs(ctx); err != nil || len(p) != n {
				b.Fatal(len(p), err)
			}
		}
	})
}

// BenchmarkIDAnswer reads a 50-peer cluster's /id, as the health check does
// five times a second: with every field (ID) and with what the check reads
// (Health).
func BenchmarkIDAnswer(b *testing.B) {
	const n = 50
	body, _, _ := bytes.Cut(peersAnswer(b, n), []byte("\n"))
	c := answering(b, body)
	ctx := context.Background()
	b.Logf("/id answer of a %d-peer cluster: %d bytes", n, len(body))
	b.Run("ID", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if id, err := c.ID(ctx); err != nil || len(id.ClusterPeers) != n {
				b.Fatal(err)
			}
		}
	})
	b.Run("Health", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if h, err := c.Health(ctx); err != nil || len(h.ClusterPeers) != n {
				b.Fatal(err)
			}
		}
	})
}
