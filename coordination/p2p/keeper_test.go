package p2p

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
)

func TestChooseKeepsBestReachable(t *testing.T) {
	self := peer.ID("self")
	var cands []candidate
	for i := range 10 {
		id := peer.ID(fmt.Sprintf("daemon-%d", i))
		cands = append(cands, candidate{id: id, score: rendezvousScore(self, id)})
	}
	best := choose(slices.Clone(cands), 3)
	if len(best) != 3 {
		t.Fatalf("kept %v, want 3 daemons", best)
	}
	// Stable: the order in which daemons were learnt does not matter.
	slices.Reverse(cands)
	if again := choose(slices.Clone(cands), 3); !slices.Equal(again, best) {
		t.Fatalf("kept %v, then %v for the same daemons", best, again)
	}
	// One of the chosen is down: it stays kept (retried) and the fourth best
	// stands in for it.
	ranked := choose(slices.Clone(cands), len(cands))
	for i := range cands {
		if cands[i].id == best[1] {
			cands[i].down = true
		}
	}
	got := choose(slices.Clone(cands), 3)
	if want := ranked[:4]; !slices.Equal(got, want) {
		t.Fatalf("with %s down kept %v, want %v", best[1], got, want)
	}
	if got := choose(nil, 3); len(got) != 0 {
		t.Fatalf("kept %v out of no daemons", got)
	}
}

// survivesDeath says whether the union of the choices of n daemons, each
// keeping keep, stays connected once daemon dead has died and the others
// have stood in for it. Peer IDs are fixed strings, so the graphs are the
// same on every run.
func survivesDeath(n, keep, dead int) bool {
	ids := make([]peer.ID, n)
	for i := range ids {
		ids[i] = peer.ID(fmt.Sprintf("graph-%d-%d", n, i))
	}
	edges := map[peer.ID][]peer.ID{}
	for i, self := range ids {
		if i == dead {
			continue
		}
		var cands []candidate
		for j, id := range ids {
			if j != i {
				cands = append(cands, candidate{id: id, score: rendezvousScore(self, id), down: j == dead})
			}
		}
		for _, id := range choose(cands, keep) {
			if id != ids[dead] {
				edges[self] = append(edges[self], id)
				edges[id] = append(edges[id], self)
			}
		}
	}
	start := ids[(dead+1)%n]
	seen := map[peer.ID]bool{start: true}
	queue := []peer.ID{start}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range edges[p] {
			if !seen[q] {
				seen[q] = true
				queue = append(queue, q)
			}
		}
	}
	return len(seen) == n-1
}

// The union of every daemon's choices stays connected when any one daemon
// dies, for the sizes the daemons run at; keeping a single daemon would not.
func TestKeptGraphSurvivesAnyOneDeath(t *testing.T) {
	for _, tc := range []struct{ n, keep int }{{5, 2}, {14, 3}, {50, 8}, {100, 8}} {
		for dead := range tc.n {
			if !survivesDeath(tc.n, tc.keep, dead) {
				t.Fatalf("n=%d keep=%d: with daemon %d dead, the others split into groups", tc.n, tc.keep, dead)
			}
		}
	}
	split := false
	for dead := range 14 {
		split = split || !survivesDeath(14, 1, dead)
	}
	if !split {
		t.Fatal("keeping one daemon each never split 14 daemons: this test cannot tell a too small kept set")
	}
}

// unsettled says why the nodes are not settled yet, or "" once every node
// knows every other, is connected to all it keeps (so none is down and no
// stand-in is needed), and the connections are few: at most 2*keep+2 per
// node on average, and only the bootstrap node connected to all (a full
// mesh, the old behaviour, never settles).
func unsettled(nodes []*Node) string {
	keptBy := map[peer.ID]map[peer.ID]bool{} // peer -> nodes keeping it
	for i, n := range nodes {
		n.keep.mu.Lock()
		known := len(n.keep.peers)
		for id, p := range n.keep.peers {
			if p.permanent || n.keep.kept[id] {
				if keptBy[id] == nil {
					keptBy[id] = map[peer.ID]bool{}
				}
				keptBy[id][n.ID()] = true
				if n.Host.Network().Connectedness(id) != network.Connected {
					down := p.down // read under the lock: the keeper's dials write it
					n.keep.mu.Unlock()
					return fmt.Sprintf("node %d is not connected to %s, which it keeps (down: %v)", i, id, down)
				}
			}
		}
		n.keep.mu.Unlock()
		if known < len(nodes)-1 {
			return fmt.Sprintf("node %d knows %d of the %d others (%d connected)", i, known, len(nodes)-1, len(n.Host.Network().Peers()))
		}
	}
	total, full := 0, 0
	for _, n := range nodes {
		c := len(n.Host.Network().Peers())
		total += c
		if c >= len(nodes)-1 {
			full++
		}
	}
	// Each node keeps keep daemons and its bootstrap peer, so the links
	// number at most n*(keep+1), and each adds one connection at both ends.
	keep := nodes[0].keep.keep
	if avg := float64(total) / float64(len(nodes)); avg > float64(2*keep+2) || full > 1 {
		return fmt.Sprintf("%.1f connections per node on average, want at most %d; %d nodes connected to all others, want only the bootstrap one", avg, 2*keep+2, full)
	}
	return ""
}

// waitSettled waits, bounded, for unsettled to say nothing.
func waitSettled(t *testing.T, nodes []*Node, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		why := unsettled(nodes)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after %v: %s", d, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listen records every message each node receives on topic.
type received struct {
	mu  sync.Mutex
	got map[peer.ID]map[string]bool
}

func listen(t *testing.T, nodes []*Node, name string) (*received, []*Topic) {
	t.Helper()
	r := &received{got: map[peer.ID]map[string]bool{}}
	var topics []*Topic
	for _, n := range nodes {
		tp, err := n.Topic(name, func(context.Context, peer.ID, []byte) pubsub.ValidationResult { return pubsub.ValidationAccept })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		topics = append(topics, tp)
		r.got[n.ID()] = map[string]bool{}
		go func() {
			for m := range tp.Messages() {
				r.mu.Lock()
				r.got[n.ID()][string(m.Data)] = true
				r.mu.Unlock()
			}
		}()
	}
	return r, topics
}

// reachesAll publishes from tp until one message has reached every node in
// nodes; gossipsub needs a heartbeat or two to graft its mesh, so early
// messages may travel only by gossip.
func reachesAll(t *testing.T, r *received, tp *Topic, nodes []*Node, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for attempt := range 20 {
		msg := fmt.Sprintf("%s #%d", what, attempt)
		if err := tp.Publish(ctx, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			missing := 0
			r.mu.Lock()
			for _, n := range nodes {
				if !r.got[n.ID()][msg] {
					missing++
				}
			}
			r.mu.Unlock()
			if missing == 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("no %s reached every node in 20 attempts", what)
}

// Fourteen daemons that only know node 0 keep a bounded number of
// connections yet all hear each other, also once node 0 is gone.
func TestBoundedConnectionsStayConnected(t *testing.T) {
	const n, keep = 14, 3
	nodes := []*Node{startNode(t, nodeOpts{keep: keep})}
	for range n - 1 {
		nodes = append(nodes, startNode(t, nodeOpts{keep: keep, bootstrap: addrStrings(nodes[0])}))
	}
	waitSettled(t, nodes, 120*time.Second)

	total := 0
	for _, nd := range nodes {
		total += len(nd.Host.Network().Peers())
	}
	t.Logf("%d nodes keeping %d: %.1f connections on average (a full mesh is %d)", n, keep, float64(total)/n, n-1)

	r, topics := listen(t, nodes, "bounded")
	for _, i := range []int{0, 5, n - 1} {
		reachesAll(t, r, topics[i], nodes, fmt.Sprintf("message from node %d", i))
	}

	// The bootstrap node dies: the others stand in for it and still hear
	// each other.
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	rest := nodes[1:]
	eventually(t, 60*time.Second, "the others stand in for node 0", func() bool {
		for _, nd := range rest {
			nd.keep.mu.Lock()
			up := 0
			for id := range nd.keep.kept {
				if nd.Host.Network().Connectedness(id) == network.Connected {
					up++
				}
			}
			nd.keep.mu.Unlock()
			if up < keep {
				return false
			}
		}
		return true
	})
	for _, i := range []int{1, n - 1} {
		reachesAll(t, r, topics[i], rest, fmt.Sprintf("message from node %d after node 0 stopped", i))
	}
}

// A daemon known only from the plan state, never heard advertising, is kept
// connected; telling the node of a known daemon again does not cut short its
// backoff, as the daemon does for every registered host every few seconds.
func TestKnownDaemonIsKeptWithoutAdvertisements(t *testing.T) {
	a, b := startNode(t, nodeOpts{}), startNode(t, nodeOpts{})
	if a.Host.Network().Connectedness(b.ID()) == network.Connected {
		t.Fatal("a and b connected before a was told of b: the test proves nothing")
	}
	a.KnowDaemon(peer.AddrInfo{ID: b.ID(), Addrs: b.Host.Addrs()})
	eventually(t, 10*time.Second, "a connects to the daemon it was told of", func() bool {
		return a.Host.Network().Connectedness(b.ID()) == network.Connected
	})

	// A daemon that does not answer: its backoff grows and stays.
	gone := startNode(t, nodeOpts{})
	goneAddrs := gone.Host.Addrs()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	a.KnowDaemon(peer.AddrInfo{ID: gone.ID(), Addrs: goneAddrs})
	var next time.Time
	eventually(t, 10*time.Second, "a dial of the stopped daemon fails", func() bool {
		a.keep.mu.Lock()
		defer a.keep.mu.Unlock()
		p := a.keep.peers[gone.ID()]
		next = p.next
		return p.down && !p.next.IsZero()
	})
	a.KnowDaemon(peer.AddrInfo{ID: gone.ID(), Addrs: goneAddrs})
	a.keep.mu.Lock()
	after := a.keep.peers[gone.ID()].next
	a.keep.mu.Unlock()
	if after.Before(next) {
		t.Fatalf("telling of a known daemon again moved its next attempt from %v to %v", next, after)
	}
}

// duplicated starts two nodes that dial each other at the same moment, again
// with new nodes until that left them two connections, and returns them
// ordered lower peer ID first. (New nodes each time: nodes that met know
// each other's address, and their keepers redial at once.)
func duplicated(t *testing.T, o nodeOpts) (lo, hi *Node) {
	t.Helper()
	for range 30 {
		a, b := startNode(t, o), startNode(t, o)
		lo, hi = a, b
		if b.ID() < a.ID() {
			lo, hi = b, a
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, p := range [][2]*Node{{a, b}, {b, a}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				<-start
				_ = p[0].Host.Connect(ctx, peer.AddrInfo{ID: p[1].ID(), Addrs: p[1].Host.Addrs()})
			}()
		}
		close(start)
		wg.Wait()
		if len(lo.Host.Network().ConnsToPeer(hi.ID())) == 2 {
			eventually(t, 5*time.Second, "both sides see both connections", func() bool {
				return len(hi.Host.Network().ConnsToPeer(lo.ID())) == 2
			})
			return lo, hi
		}
		a.Close()
		b.Close()
	}
	t.Fatal("30 pairs of simultaneous dials never left two connections: the test cannot begin")
	return nil, nil
}

// Two daemons that dial each other at once keep one connection of the two,
// and still hear each other over gossipsub; a connection carrying a stream
// that is not swarm housekeeping (raft, a download) is not closed until that
// stream ends.
func TestDuplicateConnectionIsClosed(t *testing.T) {
	var hold atomic.Bool
	hold.Store(true)
	lo, hi := duplicated(t, nodeOpts{quiet: hold.Load})
	const busy = "/upgraded/test-busy/1.0.0"
	hi.Host.SetStreamHandler(busy, func(s network.Stream) { _, _ = io.Copy(io.Discard, s); s.Close() })

	// Both connections carry a busy stream: neither is closed.
	var streams []network.Stream
	for _, c := range lo.Host.Network().ConnsToPeer(hi.ID()) {
		s, err := c.NewStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := msmux.SelectProtoOrFail(protocol.ID(busy), s); err != nil {
			t.Fatal(err)
		}
		s.SetProtocol(busy)
		streams = append(streams, s)
	}
	hold.Store(false)
	time.Sleep(500 * time.Millisecond) // 10 keeper rounds
	if n := len(lo.Host.Network().ConnsToPeer(hi.ID())); n != 2 {
		t.Fatalf("%d connections left while both carried a stream, want 2", n)
	}

	// Once one of them carries housekeeping alone, it is closed and the
	// other stays.
	keep := streams[0].Conn()
	streams[1].Reset()
	eventually(t, 5*time.Second, "the quiet duplicate is closed", func() bool {
		return len(lo.Host.Network().ConnsToPeer(hi.ID())) == 1 && len(hi.Host.Network().ConnsToPeer(lo.ID())) == 1
	})
	if got := lo.Host.Network().ConnsToPeer(hi.ID())[0]; got != keep {
		t.Fatal("the connection carrying a stream was closed, the quiet one kept")
	}
	if keep.IsClosed() {
		t.Fatal("the busy connection was closed")
	}

	// Gossipsub moved to the connection that stayed: both still hear each other.
	r, topics := listen(t, []*Node{lo, hi}, "dedupe")
	reachesAll(t, r, topics[0], []*Node{lo, hi}, "from the lower ID after the duplicate closed")
	reachesAll(t, r, topics[1], []*Node{lo, hi}, "from the higher ID after the duplicate closed")
}
