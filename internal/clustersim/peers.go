package clustersim

import (
	"encoding/json"
	"sort"
	"sync"
	"time"
)

// Membership views lag like the real monitor: a crdt peer is listed only
// after contactLag of continuous contact, and contact older than contactTTL
// counts as lost.
//
// A peer syncs with every other peer each syncInterval while there are at
// most syncFanout of them. In larger clusters (issue #9 runs 100 peers on one
// machine) it syncs with the syncFanout it tried least recently, so each is
// still reached every ceil(n/syncFanout) ticks, and contact lasts that many
// ticks longer (of the ticks as they really pass: a loaded machine syncs
// late): every peer is still seen, only later.
//
// A large cluster with nothing new also syncs less often: after a whole
// rotation in which no peer brought a change, the pause between ticks
// doubles up to idleSyncInterval, and the first change brings it back to
// syncInterval. A real peer idles on pubsub heartbeats; 100 simulated peers
// syncing 8 others 4 times a second took most of a 2-core machine before
// anything happened (issue #9). Contact lasts one rotation of the slowest
// recent ticks, so slowing down or speeding up loses no live peer.
const (
	contactLag       = time.Second
	contactTTL       = 2500 * time.Millisecond
	syncFanout       = 8
	idleSyncInterval = time.Second
)

// contact is what this peer knows of another, keyed by its cluster address.
type contact struct {
	addr      Addr
	id        string
	rpc       string
	info      json.RawMessage // the other's own /id object
	firstSeen time.Time
	lastSeen  time.Time
	lastTried time.Time // last sync attempt, for the rotation in large clusters
	cursor    syncCursor
	failing   bool // the last sync attempt failed
}

// syncCursor is where this peer stands with another: the last change pulled,
// and the tags of the info and address list it last received from it.
type syncCursor struct {
	epoch    string
	last     uint64
	infoTag  string
	knownTag string
}

// peerBook tracks known cluster addresses and contact with them.
type peerBook struct {
	mu       sync.Mutex
	self     string
	contacts map[string]*contact // by host:port
	lastTick time.Time           // last rotation step (large clusters only)
	gaps     []time.Duration     // times between the steps of the last rotation, oldest first
}

func newPeerBook(self string) *peerBook {
	return &peerBook{self: self, contacts: map[string]*contact{}}
}

// learn records a cluster address (full /p2p form or not) and says whether
// it was new.
func (b *peerBook) learn(ma string) bool {
	a, err := ParseAddr(ma)
	if err != nil || a.PeerID == b.self {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.contacts[a.HostPort()]; ok {
		if c.id == "" {
			c.id = a.PeerID
		}
		return false
	}
	b.contacts[a.HostPort()] = &contact{addr: a, id: a.PeerID}
	return true
}

// seen records an answer from the peer at hostport and says whether it is
// news: a peer new, back, restarted or with a changed /id.
func (b *peerBook) seen(hostport, id, rpc string, info json.RawMessage, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.contacts[hostport]
	if !ok {
		return false
	}
	news := c.failing || info != nil || c.rpc != rpc
	if c.id != id || now.Sub(c.lastSeen) > b.ttl() {
		c.firstSeen = now
		news = true
	}
	c.id, c.rpc, c.lastSeen, c.failing = id, rpc, now, false
	if info != nil {
		c.info = info
	}
	return news
}

// failed records a failed sync with the peer at hostport and says whether
// it is news: the peer answered the time before.
func (b *peerBook) failed(hostport string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.contacts[hostport]
	if !ok || c.failing {
		return false
	}
	c.failing = true
	return true
}

func (b *peerBook) cursor(hostport string) syncCursor {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.contacts[hostport]; ok {
		return c.cursor
	}
	return syncCursor{}
}

func (b *peerBook) setCursor(hostport string, cur syncCursor) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.contacts[hostport]; ok {
		c.cursor = cur
	}
}

// all lists every known address.
func (b *peerBook) all() []Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	keys := make([]string, 0, len(b.contacts)) // host:port, sorted without formatting it per comparison
	for k := range b.contacts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]Addr, 0, len(keys))
	for _, k := range keys {
		c := b.contacts[k]
		a := c.addr
		a.PeerID = c.id
		out = append(out, a)
	}
	return out
}

// addrOf finds the cluster address of a peer ID.
func (b *peerBook) addrOf(id string) (Addr, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.contacts {
		if c.id == id {
			a := c.addr
			a.PeerID = id
			return a, true
		}
	}
	return Addr{}, false
}

// ttl is how long contact lasts: contactTTL, plus one rotation of the
// sync targets, at the slowest tick of the last rotation, when there are
// more than syncFanout. Called with b.mu held.
func (b *peerBook) ttl() time.Duration {
	n := len(b.contacts)
	if n <= syncFanout {
		return contactTTL
	}
	slowest := syncInterval
	for _, g := range b.gaps {
		slowest = max(slowest, g)
	}
	return contactTTL + time.Duration(rounds(n))*slowest
}

// rounds is how many ticks one rotation through n targets takes.
func rounds(n int) int {
	return (n + syncFanout - 1) / syncFanout
}

// due picks the targets to sync with this tick: all of them when they are
// at most syncFanout, else the syncFanout tried least recently (never tried
// first), which are marked tried at now.
func (b *peerBook) due(targets []Addr, now time.Time) []Addr {
	if len(targets) <= syncFanout {
		return targets
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.lastTick.IsZero() {
		b.gaps = append(b.gaps, now.Sub(b.lastTick))
		if k := rounds(len(targets)); len(b.gaps) > k {
			b.gaps = append(b.gaps[:0], b.gaps[len(b.gaps)-k:]...)
		}
	}
	b.lastTick = now
	tried := func(a Addr) time.Time {
		if c, ok := b.contacts[a.HostPort()]; ok {
			return c.lastTried
		}
		return time.Time{}
	}
	out := append([]Addr(nil), targets...)
	sort.SliceStable(out, func(i, j int) bool { return tried(out[i]).Before(tried(out[j])) })
	out = out[:syncFanout]
	for _, a := range out {
		if c, ok := b.contacts[a.HostPort()]; ok {
			c.lastTried = now
		}
	}
	return out
}

// alive lists the contacts heard from within ttl; lagged keeps only
// those in contact for at least contactLag.
func (b *peerBook) alive(now time.Time, lagged bool) []contact {
	b.mu.Lock()
	defer b.mu.Unlock()
	ttl := b.ttl()
	var out []contact
	for _, c := range b.contacts {
		if c.id == "" || now.Sub(c.lastSeen) > ttl {
			continue
		}
		if lagged && now.Sub(c.firstSeen) < contactLag {
			continue
		}
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// nextPause is the pause before the next sync tick, and the count of quiet
// ticks so far, after a tick through targets that brought news or not.
// Clusters within the fanout always sync every syncInterval.
func nextPause(pause time.Duration, quiet int, news bool, targets int) (time.Duration, int) {
	if news || targets <= syncFanout {
		return syncInterval, 0
	}
	quiet++
	if quiet < rounds(targets) {
		return pause, quiet
	}
	return min(2*pause, idleSyncInterval), 0
}
