package simtest

import (
	"slices"
	"testing"
)

func TestRandomPortsAreTheDrawnOnes(t *testing.T) {
	cfg := map[string]any{
		"api": map[string]any{
			"restapi":   map[string]any{"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/21507"},
			"ipfsproxy": map[string]any{"node_multiaddress": "/ip4/127.0.0.1/tcp/5001", "listen_multiaddress": "/ip4/127.0.0.1/tcp/30001"},
		},
		"cluster": map[string]any{"listen_multiaddress": []any{"/ip4/0.0.0.0/tcp/14029"},
			"peer_addresses": []any{}},
		"observations": map[string]any{"metrics": map[string]any{"prometheus_endpoint": "/ip4/127.0.0.1/tcp/8888"}},
	}
	got := randomPorts(cfg)
	slices.Sort(got)
	if want := []int{14029, 21507, 30001}; !slices.Equal(got, want) {
		t.Fatalf("random ports %v, want %v (fixed defaults left out)", got, want)
	}
}
