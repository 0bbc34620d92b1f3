// Package p2p is the daemons' libp2p layer: a host with a persistent identity
// on a private network keyed by the IPFS Cluster secret, gossipsub topics with
// validators, and a loop that keeps the bootstrap peers and a bounded,
// well-spread set of the other daemons connected, so that gossipsub keeps a
// connected mesh without every daemon holding a connection to every other;
// every daemon's addresses stay known, so raft can reach any member by peer ID.
package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// Config configures a Node.
type Config struct {
	// IdentityFile holds the libp2p private key; created (0600) if missing.
	IdentityFile string
	// ListenAddrs are TCP multiaddrs such as /ip4/0.0.0.0/tcp/9196. TCP only:
	// the private-network protector wraps raw streams, which QUIC does not have.
	ListenAddrs []string
	// Secret is the 32-byte IPFS Cluster secret (hex-decoded); see DerivePSK.
	Secret []byte
	// Bootstrap lists full /p2p multiaddrs to connect to and keep connected.
	Bootstrap []string
	// ReconnectMin and ReconnectMax bound the backoff between attempts to
	// reach a known peer that is not connected. Defaults 1s and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// AdvertiseInterval is how often the node tells the others its
	// addresses while connections come and go, and the least time between
	// two such advertisements. Without new connections the interval doubles
	// up to 16 times this. Default 10s.
	AdvertiseInterval time.Duration
	// Keep is how many of the daemons learnt from address advertisements
	// are kept connected, besides the bootstrap peers. At least 2; default
	// DefaultKeep. Others are dialed only on demand.
	Keep int
	// Quiet, when set, holds this node's periodic address advertisements
	// while it returns true (for at most 30s past their time); see
	// advertSchedule.holdPeriodic. Advertisements for new connections and
	// AdvertiseSoon never wait. Called from the advertising loop only.
	Quiet func() bool
	// OnRecord, when set, tells whether this node's current addresses are
	// on record where every daemon reads them (the daemon's plan state,
	// which every daemon hands its swarm): its periodic advertisements are
	// skipped while it returns true; see advertSchedule.skipPeriodic.
	// Advertisements for new connections and AdvertiseSoon still go. Called
	// from the advertising loop only.
	OnRecord func() bool
	Logger   *zap.Logger

	// tlsFirst offers TLS before Noise, as daemons before Noise came first
	// did: tests use it to stand for such a daemon.
	tlsFirst bool
}

func (c *Config) setDefaults() {
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = time.Second
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = max(30*time.Second, c.ReconnectMin)
	}
	if c.AdvertiseInterval <= 0 {
		c.AdvertiseInterval = 10 * time.Second
	}
	if c.Keep == 0 {
		c.Keep = DefaultKeep
	}
}

func (c *Config) validate() error {
	switch {
	case c.IdentityFile == "":
		return errors.New("identity file is required")
	case len(c.ListenAddrs) == 0:
		return errors.New("at least one listen address is required")
	case c.Logger == nil:
		return errors.New("logger is required")
	case c.Keep < 2:
		return fmt.Errorf("keeping %d daemons connected: want at least 2, or the daemons may split into groups that cannot hear each other", c.Keep)
	}
	return nil
}

// Node is a running libp2p host with gossipsub.
type Node struct {
	Host   host.Host
	PubSub *pubsub.PubSub

	log        *zap.Logger
	cfg        Config
	keep       *keeper
	advertSoon chan struct{} // see AdvertiseSoon
	advertised atomic.Int64  // advertisements published, for tests
	// stopLoops ends the reconnect and advertising loops (tracked by wg);
	// stopPubSub ends gossipsub once no topic is left.
	stopLoops, stopPubSub context.CancelFunc
	wg                    sync.WaitGroup

	mu     sync.Mutex
	topics map[*Topic]struct{}
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// New starts a host listening on cfg.ListenAddrs, joins gossipsub, and keeps
// the bootstrap peers (and cfg.Keep of the daemons they lead to) connected in
// the background until Close. Bootstrap peers being unreachable is not an error.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting p2p node: %w", err)
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("starting p2p node: %w", err)
	}
	bootstrap, err := parseAddrInfos(cfg.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("starting p2p node: bootstrap addresses: %w", err)
	}
	iso := isolationFromEnv()
	h, err := newHost(cfg, iso)
	if err != nil {
		return nil, err
	}
	// The node outlives New's ctx: its background work is owned by Close.
	psCtx, stopPubSub := context.WithCancel(context.Background())
	// Flood publishing sends our own messages to every subscribed peer at
	// once instead of waiting for the mesh to form at the next heartbeat: the
	// swarm is small, and a one-shot announcement must not be lost.
	ps, err := pubsub.NewGossipSub(psCtx, h, pubsub.WithFloodPublish(true))
	if err != nil {
		stopPubSub()
		h.Close()
		return nil, fmt.Errorf("starting gossipsub: %w", err)
	}
	runCtx, stopLoops := context.WithCancel(context.Background())
	n := &Node{Host: h, PubSub: ps, cfg: cfg, stopLoops: stopLoops, stopPubSub: stopPubSub,
		topics: map[*Topic]struct{}{}, log: cfg.Logger.Named("p2p").With(zap.Stringer("self", h.ID())),
		advertSoon: make(chan struct{}, 1)}
	n.keep = newKeeper(h, n.log, cfg.ReconnectMin, cfg.ReconnectMax, cfg.Keep, cfg.Quiet)
	for _, ai := range bootstrap {
		n.keep.add(ai, true)
	}
	if err := n.startAdvertising(runCtx); err != nil {
		n.Close()
		return nil, err
	}
	n.goRun(func() { n.keep.run(runCtx) })
	if iso != nil { // test hook, see IsolateFileEnv
		n.goRun(func() { iso.dropWhileCut(runCtx, h, n.log) })
	}
	n.log.Info("p2p node started", zap.Stringers("addresses", n.Addrs()), zap.Int("bootstrap peers", len(bootstrap)))
	return n, nil
}

func (n *Node) goRun(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// ID is the daemon's peer ID.
func (n *Node) ID() peer.ID { return n.Host.ID() }

// Addrs returns the addresses others can dial, each ending in /p2p/<ID>.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.Host.ID(), Addrs: n.Host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Connect dials each of addrs (full /p2p multiaddrs) now and keeps the peers
// connected afterwards. It returns the failures, joined; a peer outside the
// private network always fails.
func (n *Node) Connect(ctx context.Context, addrs []string) error {
	infos, err := parseAddrInfos(addrs)
	if err != nil {
		return err
	}
	var errs []error
	for _, ai := range infos {
		n.keep.add(ai, true)
		if err := n.Host.Connect(ctx, ai); err != nil {
			errs = append(errs, fmt.Errorf("connecting to %s: %w", ai.ID, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the background loops, topics, gossipsub and the host, in that
// order. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.stopLoops()
		n.wg.Wait()
		n.mu.Lock()
		n.closed = true
		topics := make([]*Topic, 0, len(n.topics))
		for t := range n.topics {
			topics = append(topics, t)
		}
		n.mu.Unlock()
		var errs []error
		for _, t := range topics {
			errs = append(errs, t.Close())
		}
		n.stopPubSub()
		errs = append(errs, n.Host.Close())
		n.closeErr = errors.Join(errs...)
		n.log.Info("p2p node stopped")
	})
	return n.closeErr
}

// parseAddrInfos groups full /p2p multiaddrs by peer.
func parseAddrInfos(addrs []string) ([]peer.AddrInfo, error) {
	mas := make([]multiaddr.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("parsing address %q: %w", s, err)
		}
		mas = append(mas, ma)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("addresses must end in /p2p/<peer ID>: %w", err)
	}
	return infos, nil
}
