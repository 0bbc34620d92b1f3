package clustersim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestDueSyncsEveryTargetUpToTheFanout(t *testing.T) {
	for _, n := range []int{1, syncFanout} {
		b, targets := bookOf(n)
		if got := b.due(targets, time.Now()); len(got) != n {
			t.Errorf("%d targets: %d due, want all", n, len(got))
		}
		if ttl := b.ttl(); ttl != contactTTL {
			t.Errorf("%d targets: contact lasts %s, want %s as before", n, ttl, contactTTL)
		}
	}
}

func TestDueRotatesThroughALargeCluster(t *testing.T) {
	const n = 3*syncFanout + 1
	b, targets := bookOf(n)
	now := time.Unix(1000, 0)
	seen := map[string]int{}
	for tick := 0; tick < 4; tick++ { // ceil(25/8) ticks reach everyone
		got := b.due(targets, now.Add(time.Duration(tick)*syncInterval))
		if len(got) != syncFanout {
			t.Fatalf("tick %d: %d due, want %d", tick, len(got), syncFanout)
		}
		for _, a := range got {
			seen[a.HostPort()]++
		}
	}
	if len(seen) != n {
		t.Fatalf("4 ticks reached %d of %d targets", len(seen), n)
	}
	for hp, k := range seen {
		if k > 2 {
			t.Errorf("%s synced %d times in 4 ticks while others waited", hp, k)
		}
	}
	if want := contactTTL + 4*syncInterval; b.ttl() != want {
		t.Errorf("contact lasts %s, want %s (one rotation longer)", b.ttl(), want)
	}
	// A loaded machine ticks late: contact lasts one rotation of real ticks.
	b.due(targets, now.Add(3*syncInterval+time.Second)) // the last tick was at 3*syncInterval
	if want := contactTTL + 4*time.Second; b.ttl() != want {
		t.Errorf("after a 1s tick contact lasts %s, want %s", b.ttl(), want)
	}
}

func bookOf(n int) (*peerBook, []Addr) {
	b := newPeerBook("self")
	for i := 0; i < n; i++ {
		b.learn(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/peer%d", 20000+i, i))
	}
	return b, b.all()
}

// TestLargeCRDTClusterSeesEveryPeer runs more peers than the sync fanout in
// this process, each told only of the first: every peer must list every
// other, keep listing them once its syncs slow down for want of news, a pin
// must still reach all, and a stopped peer must drop out of the lists.
func TestLargeCRDTClusterSeesEveryPeer(t *testing.T) {
	const n = 2*syncFanout + 2
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := make([]*observer.ObservedLogs, n)
	peers := startCRDTPeersLogged(t, ctx, n, func(i int) *zap.Logger {
		core, l := observer.New(zap.DebugLevel)
		logs[i] = l
		return zap.New(core)
	})
	apis := peers.apis
	everyPeerLists := func(want int, peers []int) func() bool {
		return func() bool {
			for _, i := range peers {
				if k := countPeers(ctx, apis[i]); k != want {
					return false
				}
			}
			return true
		}
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	if err := poll(ctx, everyPeerLists(n, all)); err != nil {
		t.Fatalf("not every peer listed all %d peers: %v", n, err)
	}
	// With nothing new every peer slows to idleSyncInterval, and contact
	// lasts through the slower rotation: no peer drops out of a list.
	if err := poll(ctx, func() bool {
		for _, l := range logs {
			if l.FilterMessage("peer sync pace changed").Filter(func(e observer.LoggedEntry) bool {
				return e.ContextMap()["pause"] == idleSyncInterval
			}).Len() == 0 {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("a quiet peer never slowed its syncs to %s: %v", idleSyncInterval, err)
	}
	for range 3 * rounds(n-1) { // a rotation at the slowest pace, and more
		if !everyPeerLists(n, all)() {
			t.Fatalf("a peer dropped out of a list after the syncs slowed down")
		}
		time.Sleep(idleSyncInterval / 2)
	}
	c := "bafkreic3j4iknv3blrjuuzwbcuxg67oghg2vuhdfj2flj2c6ghdlktqzby"
	resp, err := http.Post(apis[0]+"/pins/"+c, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := poll(ctx, func() bool {
		for _, api := range apis {
			if !hasPin(ctx, api, c) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("pin did not reach every peer: %v", err)
	}
	if err := peers.stop(n - 1); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, everyPeerLists(n-1, all[:n-1])); err != nil {
		t.Fatalf("a stopped peer stayed listed: %v", err)
	}
}

func countPeers(ctx context.Context, api string) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/peers", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	k := 0
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		k++
	}
	return k
}

func hasPin(ctx context.Context, api, c string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/allocations?filter=all", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return bytes.Contains(b, []byte(c))
}

func rewriteCRDTPeers(t *testing.T, dir, secret, first string) {
	t.Helper()
	path := filepath.Join(dir, "service.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["cluster"].(map[string]any)["secret"] = secret
	m["cluster"].(map[string]any)["peer_addresses"] = []string{first}
	b, _ = json.Marshal(m)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// An idle sync answer leaves out the info and address list the asking peer
// already holds (named by the tags it sends back), and carries them again
// when they differ. The entries are left out too when the asking peer's
// digest says it holds the same: a restarted peer is not sent the pinset.
func TestSyncLeavesOutWhatTheAskerHolds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peers := startCRDTPeers(t, ctx, 2)
	secret, cluster0, api0 := peers.secret, peers.clusters[0], peers.apis[0]
	if err := poll(ctx, func() bool { return countPeers(ctx, api0) == 2 }); err != nil {
		t.Fatalf("peer 0 never listed both peers: %v", err)
	}
	ask := func(infoTag, knownTag, digest string) syncResponse {
		t.Helper()
		q := url.Values{"info_tag": {infoTag}, "known_tag": {knownTag}, "digest": {digest}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cluster0+"/_sim/sync?"+q.Encode(), nil)
		req.Header.Set(headerSecret, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sr syncResponse
		if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil {
			t.Fatal(err)
		}
		return sr
	}
	full := ask("", "", "")
	if len(full.Info) == 0 || len(full.Known) == 0 || full.InfoTag == "" || full.KnownTag == "" {
		t.Fatalf("a first sync answer lacks info or addresses: %+v", full)
	}
	if idle := ask(full.InfoTag, full.KnownTag, ""); len(idle.Info) != 0 || len(idle.Known) != 0 {
		t.Fatalf("an answer to a peer holding both tags repeats them: info %s, known %v", idle.Info, idle.Known)
	}
	if stale := ask("stale", "stale", ""); len(stale.Info) == 0 || len(stale.Known) == 0 {
		t.Fatalf("an answer to a peer holding other content leaves it out: %+v", stale)
	}
	// The list holds the answering peer itself, sorted: a peer that knows
	// the same addresses has the same list, hence the same tag.
	self := "/ip4/127.0.0.1/tcp/" + cluster0[strings.LastIndex(cluster0, ":")+1:] + "/p2p/" + full.ID
	if !slices.Contains(full.Known, self) || !slices.IsSorted(full.Known) || len(full.Known) != 2 {
		t.Fatalf("address list %v: want both peers, %s among them, sorted", full.Known, self)
	}

	c := "bafkreic3j4iknv3blrjuuzwbcuxg67oghg2vuhdfj2flj2c6ghdlktqzby"
	resp, err := http.Post(api0+"/pins/"+c, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	withPin := ask("", "", "")
	if len(withPin.Entries) != 1 || withPin.Entries[0].CID != c {
		t.Fatalf("a first sync answer after a pin: entries %+v, want the pin", withPin.Entries)
	}
	holder := newPinState(loadedState{Entries: withPin.Entries}, &memBackend{})
	same := ask("", "", holder.digestString())
	if len(same.Entries) != 0 || same.More || same.Last != withPin.Last || same.Epoch != withPin.Epoch {
		t.Fatalf("an asker holding the same entries got %d entries, last %d (want none, last %d)", len(same.Entries), same.Last, withPin.Last)
	}
	empty := newPinState(loadedState{}, &memBackend{})
	if other := ask("", "", empty.digestString()); len(other.Entries) != 1 {
		t.Fatalf("an asker holding nothing got %d entries, want the pin", len(other.Entries))
	}
}

// crdtPeers are crdt peers of 1.1.6 run in this process, every one pointed
// at the first; those still running are stopped when the test ends.
type crdtPeers struct {
	apis     []string // REST API URLs
	clusters []string // cluster listen host:port
	secret   string
	stops    []context.CancelFunc
	errs     []chan error
	stopped  []bool
}

func startCRDTPeers(t *testing.T, ctx context.Context, n int) *crdtPeers {
	t.Helper()
	return startCRDTPeersLogged(t, ctx, n, func(int) *zap.Logger { return zap.NewNop() })
}

// startCRDTPeersLogged is startCRDTPeers with peer i logging to log(i).
func startCRDTPeersLogged(t *testing.T, ctx context.Context, n int, log func(i int) *zap.Logger) *crdtPeers {
	t.Helper()
	p := ProfileFor("1.1.6")
	c := &crdtPeers{stopped: make([]bool, n)}
	root := t.TempDir() // before the cleanup below, which must run first
	t.Cleanup(func() {
		for i := range c.stops {
			if err := c.stop(i); err != nil {
				t.Errorf("peer %d: %v", i, err)
			}
		}
	})
	var first string
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, fmt.Sprint(i))
		var out bytes.Buffer
		if code := RunService(ctx, []string{"-c", dir, "init", "--randomports", "--consensus", "crdt"}, IO{Stdout: &out, Stderr: &out}, p, ""); code != 0 {
			t.Fatalf("init: %s", out.String())
		}
		cfg, err := LoadServiceConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		id, err := LoadIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first, c.secret = cfg.Cluster.ListenMultiaddress[0]+"/p2p/"+id.ID, cfg.Cluster.Secret
		} else {
			rewriteCRDTPeers(t, dir, c.secret, first)
		}
		api, _ := ParseAddr(cfg.API.RestAPI.HTTPListenMultiaddress)
		cl, _ := ParseAddr(cfg.Cluster.ListenMultiaddress[0])
		c.apis, c.clusters = append(c.apis, "http://"+api.HostPort()), append(c.clusters, cl.HostPort())
		dctx, stop := context.WithCancel(ctx)
		errs := make(chan error, 1)
		c.stops, c.errs = append(c.stops, stop), append(c.errs, errs)
		go func() {
			errs <- RunDaemon(dctx, DaemonOptions{Dir: dir, Profile: p, LoadDelay: 50 * time.Millisecond, Log: log(i)})
		}()
	}
	return c
}

// stop stops peer i, once, and returns how it ended.
func (c *crdtPeers) stop(i int) error {
	if c.stopped[i] {
		return nil
	}
	c.stopped[i] = true
	c.stops[i]()
	return <-c.errs[i]
}

func TestQuietLargeClusterSlowsItsSyncs(t *testing.T) {
	const targets = 3*syncFanout + 1 // a rotation of 4 ticks
	pause, quiet := syncInterval, 0
	var paces []time.Duration
	for range 16 {
		pause, quiet = nextPause(pause, quiet, false, targets)
		paces = append(paces, pause)
	}
	want := []time.Duration{syncInterval, syncInterval, syncInterval, 2 * syncInterval}
	want = append(want, 2*syncInterval, 2*syncInterval, 2*syncInterval, 4*syncInterval)
	for range 8 {
		want = append(want, idleSyncInterval)
	}
	if !slices.Equal(paces, want) {
		t.Fatalf("quiet ticks paced %v, want %v (doubling after each quiet rotation, up to %s)", paces, want, idleSyncInterval)
	}
	if p, q := nextPause(pause, quiet, true, targets); p != syncInterval || q != 0 {
		t.Errorf("news left the pause at %s (%d quiet), want %s", p, q, syncInterval)
	}
	if p, _ := nextPause(syncInterval, 100, false, syncFanout); p != syncInterval {
		t.Errorf("a cluster within the fanout slowed to %s", p)
	}
}

// TestContactOutlastsTheSlowestRecentRotation: after ticks at the idle
// pace, speeding up must not cut contact short before every target has
// been asked again at the new pace.
func TestContactOutlastsTheSlowestRecentRotation(t *testing.T) {
	const n = 3*syncFanout + 1 // 4 ticks a rotation
	b, targets := bookOf(n)
	now := time.Unix(1000, 0)
	for range 5 {
		b.due(targets, now)
		now = now.Add(idleSyncInterval)
	}
	slow := contactTTL + 4*idleSyncInterval
	if b.ttl() != slow {
		t.Fatalf("at the idle pace contact lasts %s, want %s", b.ttl(), slow)
	}
	for tick := 1; tick <= 4; tick++ {
		b.due(targets, now.Add(-idleSyncInterval+time.Duration(tick)*syncInterval))
		want := slow
		if tick == 4 {
			want = contactTTL + 4*syncInterval
		}
		if b.ttl() != want {
			t.Errorf("fast tick %d after slow ones: contact lasts %s, want %s", tick, b.ttl(), want)
		}
	}
}
