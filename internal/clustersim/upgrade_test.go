package clustersim_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// 0.14.5 -> 1.1.6 migrates badger/ into pebble/; going back to 0.14.5 then
// finds only pebble/ and starts EMPTY: the rollback trap.
func TestMigrationAndRollbackTrap(t *testing.T) {
	t.Parallel()
	oldB, newB := bins(t, "0.14.5", ""), bins(t, "1.1.6", "")
	peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 2, "crdt", oldB)
	if err != nil {
		t.Fatal(err)
	}
	prs := startAll(t, oldB, peers)
	for _, c := range testCIDs[:3] {
		pin(t, peers[0], c)
	}
	waitPins(t, peers[1], 3, 5*time.Second)
	stop(t, prs...)
	backup := filepath.Join(t.TempDir(), "backup.ndjson")
	mustRun(t, oldB.Service, "--config", peers[0].Dir, "state", "export", "-f", backup)

	prs = startAll(t, newB, peers)
	for _, p := range peers {
		waitPins(t, p, 3, 5*time.Second)
	}
	stop(t, prs...)
	for _, p := range peers {
		if _, err := os.Stat(filepath.Join(p.Dir, "badger")); !os.IsNotExist(err) {
			t.Errorf("%s: badger/ should be gone after migration", p.Dir)
		}
		if _, err := os.Stat(filepath.Join(p.Dir, "pebble")); err != nil {
			t.Errorf("%s: no pebble/: %v", p.Dir, err)
		}
	}
	if !strings.Contains(prs[0].Output(), "migrated") {
		t.Errorf("migration not logged:\n%s", prs[0].Output())
	}

	prs = startAll(t, oldB, peers)
	for i, p := range peers {
		waitReady(t, prs[i])
		if n := simtest.PinCount(testCtx(t, 2*time.Second), p.APIURL); n != 0 {
			t.Errorf("0.14.5 after 1.1.6 should start empty, shows %d", n)
		}
	}
	stop(t, prs...)
	// Restoring the backup on one peer brings the pinset back everywhere.
	mustRun(t, oldB.Service, "--config", peers[0].Dir, "state", "import", "-f", backup)
	prs = startAll(t, oldB, peers)
	for _, p := range peers {
		waitPins(t, p, 3, 5*time.Second)
	}
	stop(t, prs...)
}

// crdt: peers rm is refused with the real error; peers ls lags behind
// contact; peers of another RPC protocol are not listed but pins still flow.
func TestCRDTPeersRmAndMixedProtocols(t *testing.T) {
	t.Parallel()
	b, oldB := bins(t, "1.1.6", ""), bins(t, "0.14.5", "")
	peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 3, "crdt", b)
	if err != nil {
		t.Fatal(err)
	}
	startAll(t, b, peers[:2])
	start(t, oldB, peers[2], nil)
	waitAPI(t, testCtx(t, 5*time.Second), peers[2])
	ctx := testCtx(t, 10*time.Second)
	code, body, _ := simtest.Do(ctx, "DELETE", peers[0].APIURL, "/peers/"+peers[1].PeerID)
	if code != 500 || !strings.Contains(string(body), "crdt consensus component cannot remove peers") {
		t.Errorf("crdt peers rm: %d %s", code, body)
	}
	peerCount := func(p simtest.Peer) int {
		_, b, err := simtest.Get(ctx, p.APIURL, "/peers")
		if err != nil {
			return -1
		}
		return simtest.CountObjects(b)
	}
	// /id's cluster_peers comes from the same consensus peer list as /peers.
	idPeers := func(p simtest.Peer) []string {
		_, b, err := simtest.Get(ctx, p.APIURL, "/id")
		var id struct {
			ClusterPeers []string `json:"cluster_peers"`
		}
		if err != nil || json.Unmarshal(b, &id) != nil {
			return nil
		}
		return id.ClusterPeers
	}
	if n := peerCount(peers[0]); n != 1 {
		t.Errorf("right after start, crdt peers ls should lag (1 peer), got %d", n)
	}
	if got := idPeers(peers[0]); len(got) != 1 {
		t.Errorf("right after start, /id should list the peer alone as peers ls does, got %q", got)
	}
	if err := simtest.WaitFor(ctx, "2 peers of rpc 1.0", func() bool { return peerCount(peers[0]) == 2 }); err != nil {
		t.Fatal(err)
	}
	if err := simtest.WaitFor(ctx, "old peer alone", func() bool { return peerCount(peers[2]) == 1 }); err != nil {
		t.Fatal(err)
	}
	want := []string{peers[0].PeerID, peers[1].PeerID}
	slices.Sort(want)
	if got := idPeers(peers[0]); !slices.Equal(got, want) {
		t.Errorf("/id of a 1.1.6 peer lists %q, want the two 1.x peers %q", got, want)
	}
	if got := idPeers(peers[2]); !slices.Equal(got, []string{peers[2].PeerID}) {
		t.Errorf("/id of the 0.14.5 peer lists %q, want itself alone", got)
	}
	pin(t, peers[2], testCIDs[0])
	pin(t, peers[0], testCIDs[1])
	for _, p := range peers {
		waitPins(t, p, 2, 5*time.Second)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.1.6", "")
	failB := bins(t, "1.1.6", "fail-start")
	peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 2, "crdt", b)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("fail-start", func(t *testing.T) {
		pr := start(t, failB, peers[0], nil)
		if err := pr.Wait(testCtx(t, 5*time.Second)); err == nil || pr.ExitCode() != 1 {
			t.Fatalf("fail-start should exit 1: %v", err)
		}
		if !strings.Contains(pr.Output(), "ERROR") {
			t.Errorf("no error logged:\n%s", pr.Output())
		}
	})
	t.Run("short-pinset", func(t *testing.T) {
		p0 := start(t, b, peers[0], nil)
		p1 := start(t, b, peers[1], []string{"CLUSTERSIM_FAULT=short-pinset"})
		waitAPI(t, testCtx(t, 5*time.Second), peers[0])
		for _, c := range testCIDs {
			pin(t, peers[0], c)
		}
		waitPins(t, peers[0], 6, 5*time.Second)
		ctx := testCtx(t, 5*time.Second)
		var n int
		_ = simtest.WaitFor(ctx, "short peer loaded", func() bool { n = simtest.PinCount(ctx, peers[1].APIURL); return n > 0 })
		if n < 3 || n > 5 {
			t.Errorf("short-pinset peer shows %d of 6 pins", n)
		}
		stop(t, p1)
		cmd := exec.Command(b.Service, "--config", peers[1].Dir, "state", "export")
		cmd.Env = append(os.Environ(), "CLUSTERSIM_FAULT=short-pinset")
		out, err := cmd.Output()
		if n := simtest.CountObjects(out); err != nil || n >= 6 || n < 3 {
			t.Errorf("short-pinset export has %d of 6 (%v)", n, err)
		}
		// The loss does not spread: the healthy peer still has all.
		waitPins(t, peers[0], 6, 2*time.Second)
		stop(t, p0)
	})
	t.Run("hang-stop", func(t *testing.T) {
		pr := start(t, b, peers[0], []string{"CLUSTERSIM_FAULT=hang-stop"})
		waitAPI(t, testCtx(t, 5*time.Second), peers[0])
		if err := pr.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t, 700*time.Millisecond)
		if err := pr.Wait(ctx); err == nil {
			t.Fatal("hang-stop peer exited on SIGTERM")
		}
		pr.Kill()
	})
}
