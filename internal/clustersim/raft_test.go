package clustersim_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

func raftCluster(t *testing.T, b simtest.Binaries, threshold int) []simtest.Peer {
	t.Helper()
	peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 3, "raft", b)
	if err != nil {
		t.Fatal(err)
	}
	if threshold > 0 {
		for _, p := range peers {
			err := simtest.EditConfig(p, func(cfg map[string]any) {
				cfg["consensus"].(map[string]any)["raft"].(map[string]any)["snapshot_threshold"] = threshold
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return peers
}

// The measured trap: live pinset 5, a snapshot taken at 3, `peers rm`, clean
// stop: the offline exports hold 3 pins and say success; a restart replays
// the log and shows 5 again. The removed peer keeps answering.
func TestRaftExportTrapAfterPeersRm(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.1.6", "")
	peers := raftCluster(t, b, 3)
	prs := startAll(t, b, peers)
	waitPins(t, peers[0], 0, 5*time.Second)
	for _, c := range testCIDs[:5] {
		pin(t, peers[0], c)
	}
	for _, p := range peers {
		waitPins(t, p, 5, 5*time.Second)
	}
	code, _, err := simtest.Do(testCtx(t, 5*time.Second), "DELETE", peers[0].APIURL, "/peers/"+peers[2].PeerID)
	if err != nil || code != 204 {
		t.Fatalf("peers rm: %d %v", code, err)
	}
	// The removed peer still answers, with its pins.
	waitPins(t, peers[2], 5, 2*time.Second)
	stop(t, prs...)
	if !strings.Contains(prs[0].Output(), "cannot take snapshot now") {
		t.Errorf("shutdown snapshot should fail after a membership change:\n%s", prs[0].Output())
	}
	for _, p := range peers[:2] {
		if n := exportCount(t, b, p); n != 3 {
			t.Errorf("%s offline export: %d pins, want the last snapshot's 3", p.Dir, n)
		}
	}
	out := mustRun(t, b.Service, "--config", peers[0].Dir, "state", "export", "-f", filepath.Join(t.TempDir(), "x"))
	if !strings.Contains(out, "state successfully exported") {
		t.Errorf("export output: %q", out)
	}
	prs = startAll(t, b, peers[:2])
	for _, p := range peers[:2] {
		waitPins(t, p, 5, 5*time.Second)
	}
	stop(t, prs...)
}

// A young raft cluster without a snapshot exports nothing once a membership
// change blocked the shutdown snapshot; a lone peer of three shows 0 pins.
func TestRaftYoungClusterExportsEmptyAndLonePeerIsEmpty(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.1.6", "")
	peers := raftCluster(t, b, 0)
	prs := startAll(t, b, peers)
	for _, c := range testCIDs[:3] {
		pin(t, peers[0], c)
	}
	waitPins(t, peers[2], 3, 5*time.Second)
	code, _, _ := simtest.Do(testCtx(t, 5*time.Second), "DELETE", peers[0].APIURL, "/peers/"+peers[2].PeerID)
	if code != 204 {
		t.Fatalf("peers rm: %d", code)
	}
	stop(t, prs...)
	for _, p := range peers {
		if n := exportCount(t, b, p); n != 0 {
			t.Errorf("%s: export %d, want 0", p.Dir, n)
		}
	}
	// peer1 alone: its membership is {0,1}, so no majority: empty pinset.
	lone := start(t, b, peers[1], nil)
	waitAPI(t, testCtx(t, 5*time.Second), peers[1])
	ctx := testCtx(t, 5*time.Second)
	deadline := time.Now().Add(800 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := simtest.PinCount(ctx, peers[1].APIURL); n != 0 {
			t.Fatalf("lone raft peer shows %d pins, want 0", n)
		}
	}
	p0 := start(t, b, peers[0], nil)
	waitPins(t, peers[1], 3, 5*time.Second)
	stop(t, lone, p0)
}

// Bootstrap: a cleaned peer restarted with --bootstrap moves raft/ aside and
// rejoins with the whole pinset; cleanup rotation keeps backups_rotate.
func TestRaftBootstrapAndCleanupRotation(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.1.6", "")
	peers := raftCluster(t, b, 0)
	prs := startAll(t, b, peers)
	for _, c := range testCIDs[:4] {
		pin(t, peers[0], c)
	}
	waitPins(t, peers[2], 4, 5*time.Second)
	stop(t, prs[2])
	prs[2] = start(t, b, peers[2], nil, "--bootstrap", peers[0].ClusterAddr)
	waitPins(t, peers[2], 4, 5*time.Second)
	if _, err := os.Stat(filepath.Join(peers[2].Dir, "raft.old.0", "raft.db")); err != nil {
		t.Errorf("bootstrap should move raft/ to raft.old.0: %v", err)
	}
	pin(t, peers[2], testCIDs[4])
	waitPins(t, peers[0], 5, 5*time.Second)
	stop(t, prs...)

	if err := simtest.EditConfig(peers[1], func(cfg map[string]any) {
		cfg["consensus"].(map[string]any)["raft"].(map[string]any)["backups_rotate"] = 2
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := os.MkdirAll(filepath.Join(peers[1].Dir, "raft", "snapshots"), 0o755); err != nil {
			t.Fatal(err)
		}
		mustRun(t, b.Service, "--config", peers[1].Dir, "state", "cleanup", "-f")
	}
	var got []string
	for _, n := range []string{"raft", "raft.old.0", "raft.old.1", "raft.old.2"} {
		if _, err := os.Stat(filepath.Join(peers[1].Dir, n)); err == nil {
			got = append(got, n)
		}
	}
	if strings.Join(got, ",") != "raft.old.1,raft.old.2" {
		t.Errorf("after 3 cleanups with backups_rotate 2: %v", got)
	}
}

func TestStateCommandsRefuseWhileRunning(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.1.6", "")
	peers := raftCluster(t, b, 0)
	pr := startAll(t, b, peers[:1])
	for _, args := range [][]string{{"state", "export"}, {"state", "cleanup", "-f"}, {"state", "import", "-f", "/dev/null"}} {
		out, err := run(t, b.Service, append([]string{"--config", peers[0].Dir}, args...)...)
		if err == nil || !strings.Contains(out, "cluster.lock") {
			t.Errorf("%v while running: err %v, out %q", args, err, out)
		}
	}
	// A second daemon on the same folder refuses too.
	out, err := run(t, b.Service, "--config", peers[0].Dir, "daemon")
	if err == nil || !strings.Contains(out, "lock") {
		t.Errorf("second daemon: %v %q", err, out)
	}
	stop(t, pr...)
	if _, err := os.Stat(filepath.Join(peers[0].Dir, "cluster.lock")); !os.IsNotExist(err) {
		t.Errorf("cluster.lock should be gone after a clean stop: %v", err)
	}
}
