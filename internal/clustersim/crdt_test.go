package clustersim_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

func TestCRDTClusterReplicatesAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.1.6", "")
	peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 3, "crdt", b)
	if err != nil {
		t.Fatal(err)
	}
	prs := startAll(t, b, peers)
	pin(t, peers[0], testCIDs[0])
	pin(t, peers[1], testCIDs[1])
	pin(t, peers[2], testCIDs[2])
	for _, p := range peers {
		waitPins(t, p, 3, 5*time.Second)
	}
	code, _, err := simtest.Do(testCtx(t, 5*time.Second), "DELETE", peers[2].APIURL, "/pins/"+testCIDs[0])
	if err != nil || code != 200 {
		t.Fatalf("unpin: %d %v", code, err)
	}
	for _, p := range peers {
		waitPins(t, p, 2, 5*time.Second)
	}
	stop(t, prs...)
	startAll(t, b, peers)
	for _, p := range peers {
		waitPins(t, p, 2, 5*time.Second)
	}
}

func TestCtlAgainstPeer(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"1.1.6", "0.14.5"} {
		b := bins(t, v, "")
		peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 1, "crdt", b)
		if err != nil {
			t.Fatal(err)
		}
		pr := startAll(t, b, peers)
		waitReady(t, pr[0])
		host := []string{"--host", peers[0].APIAddr}
		ctl := func(args ...string) string { return mustRun(t, b.Ctl, append(host, args...)...) }
		if out := ctl("--enc", "json", "id"); !strings.Contains(out, peers[0].PeerID) {
			t.Errorf("%s id: %s", v, out)
		}
		ctl("pin", "add", "--no-status", "--name", "n1", testCIDs[0])
		if out := ctl("pin", "ls"); !strings.Contains(out, testCIDs[0]) || !strings.Contains(out, "n1") {
			t.Errorf("%s pin ls: %s", v, out)
		}
		if out := ctl("--enc", "json", "peers", "ls"); !strings.Contains(out, peers[0].PeerID) {
			t.Errorf("%s peers ls: %s", v, out)
		}
		if out := ctl("version"); strings.TrimSpace(out) != v {
			t.Errorf("version: %q", out)
		}
		out, err := run(t, b.Ctl, append(host, "peers", "rm", peers[0].PeerID)...)
		if err == nil || !strings.Contains(out, "cannot remove peers") {
			t.Errorf("%s crdt peers rm: %v %s", v, err, out)
		}
		ctl("pin", "rm", testCIDs[0])
		waitPins(t, peers[0], 0, 3*time.Second)
		stop(t, pr...)
	}
}

func TestReleaseTarballs(t *testing.T) {
	t.Parallel()
	b := bins(t, "1.0.8", "")
	arts, err := simtest.ReleaseTarballs(b, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(arts) != 2 || !strings.Contains(filepath.Base(arts[0].Path), "ipfs-cluster-service_v1.0.8_") {
		t.Fatalf("%+v", arts)
	}
	dir := t.TempDir()
	mustRun(t, "tar", "-xzf", arts[0].Path, "-C", dir)
	out := mustRun(t, filepath.Join(dir, "ipfs-cluster-service", "ipfs-cluster-service"), "--version")
	if out != "ipfs-cluster-service version 1.0.8\n" {
		t.Errorf("extracted binary says %q", out)
	}
	data, _ := os.ReadFile(arts[0].Path)
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != arts[0].SHA256 {
		t.Error("sha256 mismatch")
	}
}
