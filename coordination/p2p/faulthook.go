package p2p

import (
	"context"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// IsolateFileEnv names a TEST HOOK used by the chaos tests (internal/chaos):
// when this variable names a file, the node refuses every connection, in and
// out, and drops the ones it has, for as long as that file exists. It cuts one
// host off from the others deterministically, without network namespaces or
// root. Unset, which it always is in production, nothing changes.
const IsolateFileEnv = "UPGRADED_TEST_ISOLATE_FILE"

// isolation is the connection gater of the hook.
type isolation struct{ path string }

func isolationFromEnv() *isolation {
	if p := os.Getenv(IsolateFileEnv); p != "" {
		return &isolation{path: p}
	}
	return nil
}

func (g *isolation) cut() bool {
	_, err := os.Stat(g.path)
	return err == nil
}

func (g *isolation) InterceptPeerDial(peer.ID) bool                      { return !g.cut() }
func (g *isolation) InterceptAddrDial(peer.ID, multiaddr.Multiaddr) bool { return !g.cut() }
func (g *isolation) InterceptAccept(network.ConnMultiaddrs) bool         { return !g.cut() }
func (g *isolation) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return !g.cut()
}
func (g *isolation) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return !g.cut(), 0
}

// dropWhileCut closes every open connection while the host is cut off: the
// gater only sees new connections, and a cut that left old ones up would
// not cut anything.
func (g *isolation) dropWhileCut(ctx context.Context, h host.Host, log *zap.Logger) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	wasCut := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cut := g.cut()
		if cut != wasCut {
			log.Warn("test hook: host cut off from the swarm", zap.Bool("cut", cut), zap.String("file", g.path))
			wasCut = cut
		}
		if !cut {
			continue
		}
		for _, c := range h.Network().Conns() {
			_ = c.Close()
		}
	}
}
