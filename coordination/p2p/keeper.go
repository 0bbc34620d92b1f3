package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"go.uber.org/zap"
)

// protectTag marks kept peers in the connection manager so it never trims them.
const protectTag = "upgraded-keep"

// exchangedAddrTTL is how long addresses a peer advertised stay dialable
// after it stops advertising; long enough to outlast a host reboot.
const exchangedAddrTTL = 24 * time.Hour

// keeper keeps a set of peers connected, retrying each with its own
// exponential backoff so one dead peer does not slow the others.
type keeper struct {
	h        host.Host
	log      *zap.Logger
	min, max time.Duration

	mu    sync.Mutex
	peers map[peer.ID]*kept
}

type kept struct {
	next    time.Time
	backoff time.Duration
	down    bool // last attempt failed; logged once per outage
}

func newKeeper(h host.Host, log *zap.Logger, minBackoff, maxBackoff time.Duration) *keeper {
	return &keeper{h: h, log: log, min: minBackoff, max: maxBackoff, peers: map[peer.ID]*kept{}}
}

// add records ai's addresses and keeps the peer connected from now on.
// permanent addresses (configured by the operator) never expire.
func (k *keeper) add(ai peer.AddrInfo, permanent bool) {
	if ai.ID == k.h.ID() {
		return
	}
	ttl := exchangedAddrTTL
	if permanent {
		ttl = peerstore.PermanentAddrTTL
	}
	k.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, ttl)
	k.h.ConnManager().Protect(ai.ID, protectTag)
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.peers[ai.ID]; ok {
		p.next, p.backoff = time.Time{}, 0 // new addresses: try again now
		return
	}
	k.peers[ai.ID] = &kept{}
}

// run reconnects kept peers until ctx ends.
func (k *keeper) run(ctx context.Context) {
	t := time.NewTicker(k.min)
	defer t.Stop()
	for {
		k.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round dials, in parallel, every kept peer that is disconnected and due.
func (k *keeper) round(ctx context.Context) {
	now := time.Now()
	var wg sync.WaitGroup
	for _, id := range k.due(now) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.dial(ctx, id)
		}()
	}
	wg.Wait()
}

func (k *keeper) due(now time.Time) []peer.ID {
	k.mu.Lock()
	defer k.mu.Unlock()
	var ids []peer.ID
	for id, p := range k.peers {
		if k.h.Network().Connectedness(id) == network.Connected {
			p.backoff = 0
			continue
		}
		if now.After(p.next) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (k *keeper) dial(ctx context.Context, id peer.ID) {
	// Our own backoff paces the attempts, so skip the swarm's.
	dctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "keep daemons connected"), 10*time.Second)
	defer cancel()
	err := k.h.Connect(dctx, peer.AddrInfo{ID: id})
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.peers[id]
	if err == nil {
		if p.down {
			k.log.Info("reconnected to daemon", zap.Stringer("peer", id))
		}
		p.down, p.backoff = false, 0
		return
	}
	if ctx.Err() != nil {
		return
	}
	p.backoff = min(max(2*p.backoff, k.min), k.max)
	p.next = time.Now().Add(p.backoff)
	if !p.down {
		k.log.Warn("cannot reach daemon, will keep retrying", zap.Stringer("peer", id), zap.Error(err))
	}
	p.down = true
}
