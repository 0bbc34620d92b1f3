package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
)

// TestFivePeersShareOneDownload: five daemons upgrade from a release served
// over HTTP; the server sends one copy of it, whatever the number of hosts,
// because one daemon fetches it and the others get it from their peers.
func TestFivePeersShareOneDownload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 5, from: "1.0.8", pins: 10})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := serveArtifacts(rel)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	id, err := c.Announce(ctx, 0, srv.args, "--procedure", "standard")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.WaitPlan(ctx, 0, id)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Succeeded() {
		t.Fatalf("plan ended %s: %s", p.Phase, p.Reason)
	}
	requireAll(t, ctx, c, "1.1.6", 10)
	// Five hosts learn the switch later than three: the barrier grows with them.
	if want := config.Default("").Timeouts.Barrier + 2*plan.BarrierPerHost; p.Timeouts.Barrier != want {
		t.Errorf("a plan of 5 hosts has a barrier of %s, want %s", p.Timeouts.Barrier, want)
	}
	if sent := srv.sent.Load(); sent != srv.size {
		t.Fatalf("the artifact server sent %d bytes to 5 hosts, want one copy of the release (%d bytes)", sent, srv.size)
	}
	fromPeer, fromSource := 0, 0
	for _, h := range c.Hosts {
		b, err := os.ReadFile(h.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		fromPeer += strings.Count(string(b), "artifact fetched from peer")
		fromSource += strings.Count(string(b), "artifact fetched from source")
	}
	arts := strings.Count(strings.Join(srv.args, " "), "--artifact")
	if fromSource != arts || fromPeer != 4*arts {
		t.Fatalf("the daemons logged %d fetches from the source and %d from peers, want %d and %d", fromSource, fromPeer, arts, 4*arts)
	}
}
