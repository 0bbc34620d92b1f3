package artifacts

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/stage"
)

func testLog(tb testing.TB) *zap.Logger { return zaptest.NewLogger(tb) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// checkAllHold fails unless every daemon staged the source's exact bytes.
func checkAllHold(t *testing.T, ds []*daemon, src *source, paths []string, errs []error) {
	t.Helper()
	for i, d := range ds {
		if errs[i] != nil {
			t.Fatalf("daemon %d (%s): %v", i, d.id(), errs[i])
		}
		if filepath.Dir(paths[i]) != d.dir || filepath.Base(paths[i]) != "release.tar.gz" {
			t.Fatalf("daemon %d staged %s, want %s/release.tar.gz", i, paths[i], d.dir)
		}
		if got := fileSHA(t, paths[i]); got != src.sha {
			t.Fatalf("daemon %d staged sha256 %s, want %s", i, got, src.sha)
		}
	}
}

func TestFiveHostsFetchOneCopyFromTheSource(t *testing.T) {
	ds := startSwarm(t, 5, swarmOpts{log: testLog})
	src := newSource(t, 1<<20)
	p := planOf("plan-1", ds, src.artifact())
	paths, errs := fetchAll(testCtx(t), ds, p, src.artifact())
	checkAllHold(t, ds, src, paths, errs)
	if got := src.served.Load(); got != int64(len(src.body)) {
		t.Fatalf("the source served %d bytes to 5 hosts, want exactly one copy (%d)", got, len(src.body))
	}
	var fromSource, fromPeers, served int64
	for _, d := range ds {
		fromSource += d.seen.from("source")
		fromPeers += d.seen.from("peer")
		served += d.seen.served
	}
	if fromSource != int64(len(src.body)) || fromPeers != 4*int64(len(src.body)) || served != fromPeers {
		t.Fatalf("counted %d bytes from source, %d from peers, %d served; want %d, %d, %d",
			fromSource, fromPeers, served, len(src.body), 4*len(src.body), 4*len(src.body))
	}
	if seeder := byRank(ds, src.sha)[0]; seeder.seen.from("source") == 0 {
		t.Fatalf("the seeder (first in the artifact's order) did not fetch from the source")
	}
}

// A seeder that is down is waited for until its turn is over (it may only be
// unreachable for a while), then the next host fetches from the source.
func TestSeederDownNextHostFetches(t *testing.T) {
	all := startSwarm(t, 5, swarmOpts{log: testLog, seederTimeout: 2 * time.Second})
	src := newSource(t, 256<<10)
	p := planOf("plan-1", all, src.artifact())
	ranked := byRank(all, src.sha)
	if err := ranked[0].node.Close(); err != nil {
		t.Fatal(err)
	}
	up := ranked[1:]
	paths, errs := fetchAll(testCtx(t), up, p, src.artifact())
	checkAllHold(t, up, src, paths, errs)
	if got := src.served.Load(); got != int64(len(src.body)) {
		t.Fatalf("the source served %d bytes, want exactly one copy (%d)", got, len(src.body))
	}
	if up[0].seen.from("source") == 0 {
		t.Fatalf("the host after the down seeder did not take over the fetch from the source")
	}
}

// A seeder that cannot be reached at first (here its server is down for a
// second; at 100 hosts under load it was dials failing) is waited for, and
// the source still serves one copy: a host that gave it up at the first
// failed dial would fetch a second.
func TestSeederUnreachableForAWhileStaysTheOnlySourceFetch(t *testing.T) {
	ds := startSwarm(t, 4, swarmOpts{log: testLog})
	src := newSource(t, 64<<10)
	p := planOf("plan-1", ds, src.artifact())
	seeder := byRank(ds, src.sha)[0]
	seeder.server.Close()
	back := make(chan error, 1)
	time.AfterFunc(time.Second, func() {
		srv, err := Serve(ServerConfig{Host: seeder.node.Host, Store: seeder.store, Observer: seeder.seen, Log: zap.NewNop()})
		if err == nil {
			t.Cleanup(srv.Close)
		}
		back <- err
	})
	paths, errs := fetchAll(testCtx(t), ds, p, src.artifact())
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	checkAllHold(t, ds, src, paths, errs)
	if got := src.served.Load(); got != int64(len(src.body)) {
		t.Fatalf("the source served %d bytes, want exactly one copy (%d)", got, len(src.body))
	}
	if seeder.seen.from("source") == 0 {
		t.Fatalf("the seeder did not fetch from the source")
	}
}

// A seeder that is up but never fetches (it had the version installed, or is
// stuck) is waited for only until its turn is over.
func TestSilentSeederIsWaitedForOnlyItsTurn(t *testing.T) {
	ds := startSwarm(t, 4, swarmOpts{log: testLog, seederTimeout: 300 * time.Millisecond})
	src := newSource(t, 64<<10)
	p := planOf("plan-1", ds, src.artifact())
	ranked := byRank(ds, src.sha)
	paths, errs := fetchAll(testCtx(t), ranked[1:], p, src.artifact())
	checkAllHold(t, ranked[1:], src, paths, errs)
	if ranked[0].seen.from("source") != 0 || src.served.Load() == 0 {
		t.Fatalf("the silent seeder fetched, or nobody took over")
	}
}

// forger answers every artifact request with the right size and wrong bytes.
func forger(d *daemon, size int64, asked *atomic.Int32) {
	d.server.Close()
	d.node.Host.SetStreamHandler(Protocol, func(st network.Stream) {
		defer st.Close()
		asked.Add(1)
		var req request
		if readLine(bufio.NewReader(st), &req) != nil {
			return
		}
		_ = writeLine(st, header{Code: codeOK, Size: size})
		_, _ = st.Write(bytes.Repeat([]byte("forged!!"), int(size/8)))
	})
}

func TestForgedCopyIsRejectedAndNeverStaged(t *testing.T) {
	ds := startSwarm(t, 5, swarmOpts{log: testLog})
	src := newSource(t, 64<<10)
	p := planOf("plan-1", ds, src.artifact())
	ranked := byRank(ds, src.sha)
	var asked atomic.Int32
	forger(ranked[0], int64(len(src.body)), &asked) // the seeder itself is the forger
	honest := ranked[1:]
	paths, errs := fetchAll(testCtx(t), honest, p, src.artifact())
	checkAllHold(t, honest, src, paths, errs)
	if asked.Load() == 0 {
		t.Fatal("no host asked the forger: the test proves nothing")
	}
	if got := src.served.Load(); got != int64(len(src.body)) {
		t.Fatalf("the source served %d bytes, want exactly one copy (%d)", got, len(src.body))
	}
	for _, d := range honest {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Fatalf("%s holds %v: a rejected copy left something behind", d.dir, entries)
		}
	}
}

func TestDownloadForgedCopyLeavesNothing(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog})
	src := newSource(t, 4096)
	var asked atomic.Int32
	forger(ds[1], int64(len(src.body)), &asked)
	final := filepath.Join(ds[0].dir, "release.tar.gz")
	_, err := Download(testCtx(t), ds[0].node.Host, ds[1].node.ID(), src.sha, final, 1<<20, 5*time.Second, 5*time.Second)
	if !errors.Is(err, stage.ErrChecksumMismatch) {
		t.Fatalf("err = %v, want a sha256 mismatch", err)
	}
	if entries, _ := os.ReadDir(ds[0].dir); len(entries) != 0 {
		t.Fatalf("a forged copy left %v behind", entries)
	}
}

func TestUnknownArtifactIsAClearError(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog})
	unknown := strings.Repeat("ab", 32)
	_, err := Download(testCtx(t), ds[0].node.Host, ds[1].node.ID(), unknown, filepath.Join(ds[0].dir, "x"), 1<<20, 5*time.Second, 5*time.Second)
	if !errors.Is(err, ErrNotHeld) || !strings.Contains(err.Error(), unknown) || !strings.Contains(err.Error(), "not held") {
		t.Fatalf("err = %v, want a clear not-held error naming the sha256", err)
	}
}

// rawAsk sends a request line as is and returns the answer's header.
func rawAsk(t *testing.T, from, to *daemon, line string) header {
	t.Helper()
	st, err := from.node.Host.NewStream(testCtx(t), to.node.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	_ = st.CloseWrite()
	var h header
	if err := readLine(bufio.NewReader(st), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestRequestByPathIsRefused(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog})
	for _, line := range []string{`{"sha256":"../../etc/passwd"}`, `{"path":"/etc/passwd"}`, `not json`} {
		if h := rawAsk(t, ds[0], ds[1], line); h.Code != codeBadRequest || h.Error == "" {
			t.Fatalf("request %s answered %+v, want a bad request", line, h)
		}
	}
}

func TestOnlyVerifiedUnchangedFilesAreServed(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog})
	asker, holder := ds[0], ds[1]
	body := []byte("#!/bin/sh\necho a release\n")
	sum := digestOf(body)
	ask := func() error {
		_, err := Download(testCtx(t), asker.node.Host, holder.node.ID(), sum, filepath.Join(asker.dir, "got"), 1<<20, 5*time.Second, 5*time.Second)
		return err
	}
	// A partial download and a file never verified, both with the right bytes, sit in the staging folder.
	for _, name := range []string{".release.part-123", "release"} {
		if err := os.WriteFile(filepath.Join(holder.dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := ask(); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("an unverified file was offered: err = %v", err)
	}
	// Verified, it is served; changed after, it no longer is.
	final := filepath.Join(holder.dir, "release")
	if err := holder.store.add(sum, final); err != nil {
		t.Fatal(err)
	}
	if err := ask(); err != nil {
		t.Fatalf("a verified file was not served: %v", err)
	}
	if err := os.WriteFile(final, []byte("#!/bin/sh\necho tampered\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ask(); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("a file changed since its verification was offered: err = %v", err)
	}
}

func TestLocalSourceIsReadLocally(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog})
	body := []byte("#!/bin/sh\necho local release\n")
	path := filepath.Join(t.TempDir(), "ipfs-cluster-service")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	art := plan.Artifact{Source: path, SHA256: digestOf(body)}
	got, err := ds[0].sharer.FetchArtifact(testCtx(t), planOf("plan-1", ds, art), art, ds[0].dir)
	if err != nil {
		t.Fatal(err)
	}
	if fileSHA(t, got) != digestOf(body) || ds[0].seen.from("local") != int64(len(body)) || ds[0].seen.from("peer") != 0 {
		t.Fatalf("a local source was not read from the local disk")
	}
}

func TestBadDigestChangesNothing(t *testing.T) {
	ds := startSwarm(t, 1, swarmOpts{log: testLog})
	art := plan.Artifact{Source: "http://127.0.0.1:1/release.tar.gz", SHA256: "not a digest"}
	_, err := ds[0].sharer.FetchArtifact(testCtx(t), planOf("plan-1", ds, art), art, ds[0].dir)
	if err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("err = %v, want an error about the sha256", err)
	}
	if entries, _ := os.ReadDir(ds[0].dir); len(entries) != 0 {
		t.Fatalf("a refused artifact left %v", entries)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestUploadsBeyondTheLimitAreAnsweredBusy(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog})
	asker, holder := ds[0], ds[1]
	body := []byte("#!/bin/sh\necho a release\n")
	final := filepath.Join(holder.dir, "release")
	if err := os.WriteFile(final, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := holder.store.add(digestOf(body), final); err != nil {
		t.Fatal(err)
	}
	for range cap(holder.server.slots) { // every upload slot taken, as by slow downloads
		holder.server.slots <- struct{}{}
	}
	ask := func() error {
		_, err := Download(testCtx(t), asker.node.Host, holder.node.ID(), digestOf(body), filepath.Join(asker.dir, "got"), 1<<20, 5*time.Second, 5*time.Second)
		return err
	}
	if err := ask(); !errors.Is(err, ErrBusy) {
		t.Fatalf("with every slot taken: err = %v, want busy", err)
	}
	<-holder.server.slots
	if err := ask(); err != nil {
		t.Fatalf("with a slot free: %v", err)
	}
}

// The hosts take the artifact down the tree: each waits on its parent, so
// the requests stay about one per host. Asking around every 20 ms (the
// test swarm's retry), as all hosts did before the tree, costs many times
// more.
func TestTreeTakesAboutOneRequestPerHost(t *testing.T) {
	const n = 12
	ds := startSwarm(t, n, swarmOpts{log: testLog})
	src := newSource(t, 1<<20)
	p := planOf("plan-1", ds, src.artifact())
	paths, errs := fetchAll(testCtx(t), ds, p, src.artifact())
	checkAllHold(t, ds, src, paths, errs)
	if got := src.served.Load(); got != int64(len(src.body)) {
		t.Fatalf("the source served %d bytes, want exactly one copy (%d)", got, len(src.body))
	}
	requests, served := 0, 0
	for _, d := range ds {
		requests += d.seen.requests()
		d.seen.mu.Lock()
		served += d.seen.answered[codeOK]
		d.seen.mu.Unlock()
	}
	t.Logf("%d hosts: %d requests answered, %d of them with the artifact", n, requests, served)
	if served != n-1 {
		t.Fatalf("%d copies served, want %d", served, n-1)
	}
	// The seeder asks nobody; the others ask their parent once, again at
	// most once if it had not started yet.
	if limit := 2 * (n - 1); requests > limit {
		t.Fatalf("%d requests for %d hosts, want at most %d", requests, n, limit)
	}
	// Each host but the seeder got it from its parent in the tree.
	ranked := byRank(ds, src.sha)
	for rank := 1; rank < n; rank++ {
		parent := ranked[(rank-1)/4]
		parent.seen.mu.Lock()
		ok := parent.seen.answered[codeOK]
		parent.seen.mu.Unlock()
		if ok == 0 {
			t.Fatalf("host %d's parent (rank %d) served nothing", rank, (rank-1)/4)
		}
	}
}

// A request that asks to wait is held until the copy arrives, then served;
// one for an artifact the daemon is not fetching is held only briefly.
func TestHeldRequestIsServedWhenTheCopyArrives(t *testing.T) {
	ds := startSwarm(t, 2, swarmOpts{log: testLog, unwantedHold: 200 * time.Millisecond})
	asker, holder := ds[0], ds[1]
	body := bytes.Repeat([]byte("release "), 4096)
	sum := digestOf(body)

	// Not wanted by the holder: answered not held after the short hold.
	_, err := download(testCtx(t), asker.node.Host, holder.node.ID(), sum, filepath.Join(asker.dir, "got"), 1<<20, 5*time.Second, 5*time.Second, 10*time.Second)
	if !errors.Is(err, ErrNotHeld) {
		t.Fatalf("err = %v, want not held", err)
	}

	// Wanted: held until the holder stages its copy, then served.
	done := holder.store.beginWant(sum)
	defer done()
	got := make(chan error, 1)
	go func() {
		_, err := download(testCtx(t), asker.node.Host, holder.node.ID(), sum, filepath.Join(asker.dir, "got"), 1<<20, 5*time.Second, 5*time.Second, 20*time.Second)
		got <- err
	}()
	time.Sleep(500 * time.Millisecond) // past the unwanted hold: only the want keeps it
	select {
	case err := <-got:
		t.Fatalf("answered before the copy arrived: %v", err)
	default:
	}
	path := filepath.Join(holder.dir, "release.tar.gz")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := holder.store.add(sum, path); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("held request: %v", err)
	}
	if fileSHA(t, filepath.Join(asker.dir, "got")) != sum {
		t.Fatal("the copy served after the hold differs")
	}
	if n := holder.seen.requests(); n != 2 {
		t.Fatalf("the holder answered %d requests, want 2", n)
	}
}
