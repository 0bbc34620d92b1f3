package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"slices"
	"strings"
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

// DefaultKeep is how many advertised daemons each daemon keeps connected
// besides its bootstrap peers when Config.Keep is not set: every daemon of
// a cluster of up to 129. With 8, the N=100 benchmark failed: under load
// the on-demand dials to daemons not kept (artifact seeders, the leader of
// progress reports) timed out in the handshake, 43 hosts fetched the
// release from its source and the plan was not prepared in time; at N=50
// 1.5 copies came from the source instead of one. Connections made while
// the cluster is idle are what a loaded upgrade needs. A smaller number
// saves ~300 KB per daemon not kept (idle RSS 45 -> 39 MB at N=50).
const DefaultKeep = 128

// keeper keeps the bootstrap peers and a bounded set of the advertised
// daemons connected, retrying each with its own exponential backoff so one
// dead peer does not slow the others.
//
// Which advertised daemons: each is scored by sha256(self ID, its ID), and
// the best-scoring ones are kept until `keep` of them are reachable. So the
// choice is stable, an unreachable choice is stood in for by the next best
// until it is back, and the union of every daemon's choices is a random
// graph where each daemon has `keep` links out: connected with high
// probability, without the memory of a full mesh. Every advertised address
// stays in the peerstore, so raft and the stream protocols still reach any
// daemon on demand.
type keeper struct {
	h        host.Host
	log      *zap.Logger
	min, max time.Duration
	keep     int

	// quiet, when set and true, holds off closing duplicate connections
	// (see dedupe): the daemon's plan is switching.
	quiet func() bool

	mu    sync.Mutex
	peers map[peer.ID]*known
	kept  map[peer.ID]bool // the advertised daemons kept last round
}

type known struct {
	permanent bool     // configured by the operator: always kept
	score     [32]byte // rendezvous score; higher is kept first
	next      time.Time
	backoff   time.Duration
	down      bool // last attempt failed; logged once per outage
	// ours: the keeper dialed the peer, so it may close the outbound
	// connections to it once the peer is no longer kept. Set at the attempt,
	// not its success: a dial that timed out may still complete.
	ours bool
}

func newKeeper(h host.Host, log *zap.Logger, minBackoff, maxBackoff time.Duration, keep int, quiet func() bool) *keeper {
	return &keeper{h: h, log: log, min: minBackoff, max: maxBackoff, keep: keep, quiet: quiet,
		peers: map[peer.ID]*known{}, kept: map[peer.ID]bool{}}
}

// rendezvousScore is sha256 of the two peer IDs, self first.
func rendezvousScore(self, other peer.ID) [32]byte {
	return sha256.Sum256(append([]byte(self), other...))
}

// add records ai's addresses and considers the peer for keeping from now on.
// permanent addresses (configured by the operator) never expire and are
// always kept. An advertisement says the daemon is there now: a known
// daemon is tried again at once.
func (k *keeper) add(ai peer.AddrInfo, permanent bool) { k.record(ai, permanent, true) }

// know records a daemon learnt from elsewhere than its advertisements (the
// plan state's registered hosts) and considers it for keeping from now on.
// It does not cut short the backoff of a daemon already known: it is
// repeated for every host every few seconds, reachable or not.
func (k *keeper) know(ai peer.AddrInfo) { k.record(ai, false, false) }

func (k *keeper) record(ai peer.AddrInfo, permanent, retryNow bool) {
	if ai.ID == k.h.ID() {
		return
	}
	ttl := exchangedAddrTTL
	if permanent {
		ttl = peerstore.PermanentAddrTTL
	}
	k.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, ttl)
	if permanent {
		k.h.ConnManager().Protect(ai.ID, protectTag)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.peers[ai.ID]; ok {
		p.permanent = p.permanent || permanent
		if retryNow {
			p.next, p.backoff = time.Time{}, 0
		}
		return
	}
	k.peers[ai.ID] = &known{permanent: permanent, score: rendezvousScore(k.h.ID(), ai.ID)}
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

// round chooses the kept peers, closes the connections it opened to peers no
// longer kept, and dials, in parallel, every kept peer that is disconnected
// and due.
func (k *keeper) round(ctx context.Context) {
	now := time.Now()
	dial, surplus := k.due(now)
	for _, id := range surplus {
		k.release(id)
	}
	var wg sync.WaitGroup
	for _, id := range dial {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.dial(ctx, id)
		}()
	}
	wg.Wait()
	if k.quiet == nil || !k.quiet() {
		k.dedupe()
	}
}

// dedupe closes this daemon's surplus connections to other daemons. Two
// daemons that dial each other at the same moment (each learnt the other's
// address from the same round of advertisements, or raft dialed a new member
// while its keeper dialed back) keep both connections, and the swarm never
// closes either: in the N=100 benchmark the daemons held 99-157 connections
// to their 99 peers, median 119. Each connection has its own multiplexer,
// encryption and 4 goroutines.
//
// Of two daemons, only the one with the lower peer ID closes, so that they
// never close both at once. It keeps a connection carrying more than swarm
// housekeeping if there is one, else the one the swarm hands new streams to
// (the most streams, the newest on a tie), and closes the others that carry
// nothing but housekeeping; gossipsub moves its stream to the connection
// that stays. A connection carrying raft or a download is left alone, and
// looked at again next round.
func (k *keeper) dedupe() {
	self := k.h.ID()
	for _, id := range k.h.Network().Peers() {
		if self >= id {
			continue
		}
		conns := k.h.Network().ConnsToPeer(id)
		if len(conns) < 2 {
			continue
		}
		// The one to keep sorts first: busy before quiet, then as the swarm
		// chooses, the most streams and the newest.
		quiet := make(map[network.Conn]bool, len(conns))
		for _, c := range conns {
			quiet[c] = quietConn(c)
		}
		slices.SortFunc(conns, func(a, b network.Conn) int {
			if quiet[a] != quiet[b] {
				if quiet[b] {
					return -1
				}
				return 1
			}
			if n := len(b.GetStreams()) - len(a.GetStreams()); n != 0 {
				return n
			}
			return b.Stat().Opened.Compare(a.Stat().Opened)
		})
		for _, c := range conns[1:] {
			if !quiet[c] || c.IsClosed() || c.Stat().Limited {
				continue
			}
			k.log.Debug("closing a duplicate connection to a daemon", zap.Stringer("peer", id),
				zap.Stringer("remote", c.RemoteMultiaddr()))
			if err := c.Close(); err != nil {
				k.log.Debug("closing a duplicate connection", zap.Stringer("peer", id), zap.Error(err))
			}
		}
	}
}

// quietConn tells whether c carries nothing but swarm housekeeping.
func quietConn(c network.Conn) bool {
	for _, s := range c.GetStreams() {
		if !housekeeping(string(s.Protocol())) {
			return false
		}
	}
	return true
}

// candidate is an advertised daemon as choose sees it.
type candidate struct {
	id    peer.ID
	score [32]byte
	down  bool
}

// choose returns the candidates to keep: the best-scoring ones, in order,
// until keep of them are not known to be down. The down ones among them stay
// chosen (and are retried) while the next best stand in for them.
func choose(cands []candidate, keep int) []peer.ID {
	slices.SortFunc(cands, func(a, b candidate) int { return bytes.Compare(b.score[:], a.score[:]) })
	var ids []peer.ID
	up := 0
	for _, c := range cands {
		if up >= keep {
			break
		}
		ids = append(ids, c.id)
		if !c.down {
			up++
		}
	}
	return ids
}

// due chooses this round's kept peers and returns those to dial now and the
// peers no longer kept whose connection the keeper opened.
func (k *keeper) due(now time.Time) (dial, surplus []peer.ID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cands := make([]candidate, 0, len(k.peers))
	for id, p := range k.peers {
		if !p.permanent {
			cands = append(cands, candidate{id: id, score: p.score, down: p.down})
		}
	}
	kept := map[peer.ID]bool{}
	for _, id := range choose(cands, k.keep) {
		kept[id] = true
	}
	k.logChanges(kept)
	for id, p := range k.peers {
		connected := k.h.Network().Connectedness(id) == network.Connected
		if !p.permanent && !kept[id] {
			if connected && p.ours {
				surplus = append(surplus, id)
			}
			continue
		}
		if connected {
			if p.down { // it dialed us
				k.log.Info("reconnected to daemon", zap.Stringer("peer", id))
			}
			p.down, p.backoff = false, 0
			continue
		}
		if now.After(p.next) {
			dial = append(dial, id)
		}
	}
	return dial, surplus
}

// logChanges protects the newly kept daemons from the connection manager,
// unprotects the dropped ones, and says so at debug level.
func (k *keeper) logChanges(kept map[peer.ID]bool) {
	var added, dropped []string
	for id := range kept {
		if !k.kept[id] {
			k.h.ConnManager().Protect(id, protectTag)
			added = append(added, id.String())
		}
	}
	for id := range k.kept {
		if !kept[id] {
			if p := k.peers[id]; p == nil || !p.permanent {
				k.h.ConnManager().Unprotect(id, protectTag)
			}
			dropped = append(dropped, id.String())
		}
	}
	k.kept = kept
	if len(added)+len(dropped) > 0 {
		slices.Sort(added)
		slices.Sort(dropped)
		k.log.Debug("daemons kept connected changed", zap.Strings("now kept", added),
			zap.Strings("no longer kept", dropped), zap.Int("kept", len(kept)), zap.Int("known", len(k.peers)))
	}
}

// housekeeping says whether a stream protocol only maintains the swarm
// (gossipsub, identify, ping), so that a connection carrying nothing else
// can be closed without interrupting anyone's work.
func housekeeping(proto string) bool {
	for _, p := range []string{"/meshsub/", "/floodsub/", "/ipfs/id/", "/ipfs/ping/"} {
		if strings.HasPrefix(proto, p) {
			return true
		}
	}
	return false
}

// release closes the connections the keeper opened to a daemon it no longer
// keeps, unless something besides swarm housekeeping is using them (raft, a
// download): those stay open, and the next round looks again.
func (k *keeper) release(id peer.ID) {
	busy, closed := false, false
	for _, c := range k.h.Network().ConnsToPeer(id) {
		if c.Stat().Direction != network.DirOutbound {
			continue // the peer dialed us: not ours to close
		}
		if !quietConn(c) {
			busy = true
			continue
		}
		closed = true
		if err := c.Close(); err != nil {
			k.log.Debug("closing the connection to a daemon no longer kept", zap.Stringer("peer", id), zap.Error(err))
		}
	}
	// Done once ours is closed and nothing of ours is left open; with only
	// the peer's own connection open, a dial of ours that timed out may still
	// complete, so look again next round.
	if closed && !busy {
		k.mu.Lock()
		if p := k.peers[id]; p != nil {
			p.ours = false
		}
		k.mu.Unlock()
	}
}

func (k *keeper) dial(ctx context.Context, id peer.ID) {
	k.mu.Lock()
	k.peers[id].ours = true
	k.mu.Unlock()
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
