package daemon

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
)

// Every daemon registers its libp2p addresses in the plan state, which every
// daemon holds. libp2p dials from its own peerstore only, filled by
// connections and by gossiped advertisements, and under load those are lost:
// at 100 daemons a newly elected raft leader had no address for 28 of its
// members, a host that could not reach the artifact's seeder ("no
// addresses") fetched the artifact from the source itself, and daemons whose
// gossip failed at startup stayed connected to their bootstrap daemon alone.
// Every registeredAddrsEvery each daemon tells its swarm of every registered
// host, so that what the plan state knows libp2p can dial and the keeper
// keeps connected.
const registeredAddrsEvery = 10 * time.Second

// registeredAddrs lists the registered addresses of every host of s but
// self. An address that does not parse, or names another peer, is left out.
func registeredAddrs(s *plan.State, self peer.ID) []peer.AddrInfo {
	out := make([]peer.AddrInfo, 0, len(s.Hosts))
	for id, h := range s.Hosts {
		if id == self.String() {
			continue
		}
		if pid, err := peer.Decode(id); err == nil {
			if ai := hostAddrInfo(pid, h); len(ai.Addrs) > 0 {
				out = append(out, ai)
			}
		}
	}
	return out
}

// hostAddrInfo is the addresses host h registered for itself, id; one that
// does not parse, or names another peer, is left out.
func hostAddrInfo(id peer.ID, h *plan.Host) peer.AddrInfo {
	ai := peer.AddrInfo{ID: id}
	for _, a := range h.Addrs {
		if p, err := peer.AddrInfoFromString(a); err == nil && p.ID == id {
			ai.Addrs = append(ai.Addrs, p.Addrs...)
		}
	}
	return ai
}

// keepRegisteredAddrs hands know, at once and then every `every` until ctx
// ends, the addresses that list returns. It logs the hosts of which book
// held no address at all: those libp2p could not have dialled.
func keepRegisteredAddrs(ctx context.Context, list func() []peer.AddrInfo, book peerstore.AddrBook, know func(peer.AddrInfo), every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		missing := 0
		for _, ai := range list() {
			if len(book.Addrs(ai.ID)) == 0 {
				missing++
			}
			know(ai)
		}
		if missing > 0 {
			log.Debug("gave libp2p the registered addresses of hosts it had none for", zap.Int("hosts", missing))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
