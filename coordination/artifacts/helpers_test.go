package artifacts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
)

// source is an http artifact source on 127.0.0.1 that counts the bytes it serves.
type source struct {
	srv    *httptest.Server
	body   []byte
	sha    string
	served atomic.Int64
}

func newSource(tb testing.TB, size int) *source {
	tb.Helper()
	s := &source{body: make([]byte, size)}
	if _, err := rand.Read(s.body); err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(s.body)
	s.sha = hex.EncodeToString(sum[:])
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n, _ := w.Write(s.body)
		s.served.Add(int64(n))
	}))
	tb.Cleanup(s.srv.Close)
	return s
}

func (s *source) artifact() plan.Artifact {
	return plan.Artifact{Source: s.srv.URL + "/release.tar.gz", SHA256: s.sha}
}

// counter is an Observer that keeps its figures.
type counter struct {
	mu       sync.Mutex
	fetched  map[string]int64
	served   int64
	answered map[string]int
}

func (c *counter) ArtifactAnswered(code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answered == nil {
		c.answered = map[string]int{}
	}
	c.answered[code]++
}

// requests is how many requests the daemon answered, any answer.
func (c *counter) requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, k := range c.answered {
		n += k
	}
	return n
}

func (c *counter) ArtifactFetched(from string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fetched == nil {
		c.fetched = map[string]int64{}
	}
	c.fetched[from] += n
}

func (c *counter) ArtifactServed(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.served += n
}

func (c *counter) from(what string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetched[what]
}

// daemon is one daemon's share of the protocol on a real libp2p node.
type daemon struct {
	node   *p2p.Node
	store  *Store
	server *Server
	sharer *Sharer
	seen   *counter
	dir    string
}

func (d *daemon) id() string { return d.node.ID().String() }

type swarmOpts struct {
	seederTimeout, maxWait time.Duration
	retry                  time.Duration // default 20ms
	unwantedHold           time.Duration // server default
	log                    func(tb testing.TB) *zap.Logger
}

// startSwarm starts n real libp2p nodes on 127.0.0.1, on one private
// network, each knowing the others' addresses, each serving and sharing.
func startSwarm(tb testing.TB, n int, o swarmOpts) []*daemon {
	tb.Helper()
	if o.seederTimeout == 0 {
		o.seederTimeout = 20 * time.Second
	}
	if o.retry == 0 {
		o.retry = 20 * time.Millisecond
	}
	if o.maxWait == 0 {
		o.maxWait = time.Minute
	}
	if o.log == nil {
		o.log = func(testing.TB) *zap.Logger { return zap.NewNop() }
	}
	log := o.log(tb)
	secret := make([]byte, p2p.SecretSize)
	ds := make([]*daemon, n)
	for i := range ds {
		dir := tb.TempDir()
		node, err := p2p.New(context.Background(), p2p.Config{IdentityFile: filepath.Join(dir, "identity.key"),
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Secret: secret, Logger: log})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { node.Close() })
		d := &daemon{node: node, store: NewStore(), seen: &counter{}, dir: filepath.Join(dir, "staging")}
		if err := os.MkdirAll(d.dir, 0o700); err != nil {
			tb.Fatal(err)
		}
		if d.server, err = Serve(ServerConfig{Host: node.Host, Store: d.store, UnwantedHold: o.unwantedHold, Observer: d.seen, Log: log}); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(d.server.Close)
		if d.sharer, err = New(Config{Host: node.Host, Store: d.store, SeederTimeout: o.seederTimeout, MaxWait: o.maxWait,
			RetryInterval: o.retry, RequestTimeout: 10 * time.Second, Observer: d.seen, Log: log}); err != nil {
			tb.Fatal(err)
		}
		ds[i] = d
	}
	for _, a := range ds {
		for _, b := range ds {
			if a != b {
				a.node.Host.Peerstore().AddAddrs(b.node.ID(), b.node.Host.Addrs(), peerstore.PermanentAddrTTL)
			}
		}
	}
	connectAll(tb, ds)
	return ds
}

// connectAll connects every pair, as the daemons' keeper does, so that a
// measure does not include the swarm's own handshakes. A few dials at a
// time, each retried: on a loaded machine a handshake may time out.
func connectAll(tb testing.TB, ds []*daemon) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(ds))
	slots := make(chan struct{}, 2)
	for i, a := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			for _, b := range ds[i+1:] {
				var err error
				for try := 0; try < 10; try++ {
					if try > 0 {
						time.Sleep(200 * time.Millisecond) // let a loaded machine breathe before the next handshake
					}
					dctx := network.WithDialPeerTimeout(ctx, 2*time.Minute)
					if err = a.node.Host.Connect(dctx, peer.AddrInfo{ID: b.node.ID(), Addrs: b.node.Host.Addrs()}); err == nil {
						break
					}
					if sw, ok := a.node.Host.Network().(*swarm.Swarm); ok {
						sw.Backoff().Clear(b.node.ID()) // a timed-out handshake is worth another try
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// planOf is a plan whose hosts are the daemons given.
func planOf(id string, ds []*daemon, arts ...plan.Artifact) *plan.Plan {
	p := &plan.Plan{Announcement: plan.Announcement{ID: id, Artifacts: arts}, Hosts: map[string]*plan.HostProgress{}}
	for _, d := range ds {
		p.Hosts[d.id()] = &plan.HostProgress{}
	}
	return p
}

// byRank returns the daemons in the artifact's order.
func byRank(ds []*daemon, sha string) []*daemon {
	ids := make([]string, len(ds))
	byID := map[string]*daemon{}
	for i, d := range ds {
		ids[i] = d.id()
		byID[d.id()] = d
	}
	out := make([]*daemon, 0, len(ds))
	for _, id := range Order(sha, ids) {
		out = append(out, byID[id])
	}
	return out
}

// fetchAll runs FetchArtifact on every daemon at once and returns each one's path and error.
func fetchAll(ctx context.Context, ds []*daemon, p *plan.Plan, a plan.Artifact) ([]string, []error) {
	paths, errs := make([]string, len(ds)), make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = d.sharer.FetchArtifact(ctx, p, a, d.dir)
		}()
	}
	wg.Wait()
	return paths, errs
}

func fileSHA(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
