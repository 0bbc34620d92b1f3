package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLeavesOutUnusedLibp2pParts guards the daemon's resident memory:
// every page of the binary's code and tables ends up resident, and importing
// the go-libp2p root package (libp2p.New) links QUIC, WebTransport, WebRTC
// and the fx container, 7 MB of code the private TCP swarm never runs (idle
// RSS at N=100: 41 -> 36 MB without them). See coordination/p2p/host.go.
func TestBinaryLeavesOutUnusedLibp2pParts(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("listing the binary's packages needs the go tool on PATH: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	unwanted := []string{
		"github.com/libp2p/go-libp2p",
		"github.com/quic-go/quic-go",
		"github.com/pion/webrtc/v4",
		"github.com/libp2p/go-libp2p/p2p/transport/webtransport",
		"go.uber.org/fx",
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed only %d packages: %q", len(deps), out)
	}
	for _, p := range unwanted {
		if deps[p] {
			t.Errorf("upgraded links %s; build the libp2p host from its parts (coordination/p2p/host.go)", p)
		}
	}
}
