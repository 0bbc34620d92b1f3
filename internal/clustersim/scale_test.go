package clustersim_test

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// writePins writes n distinct pins as a state export file.
func writePins(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pins.ndjson")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprint(i)))
		mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
		c := cid.NewCidV1(cid.Raw, mh)
		fmt.Fprintf(w, `{"cid":%q,"name":"p%d","type":"pin","timestamp":"2026-01-01T00:00:00Z"}`+"\n", c, i)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// 100,000 pins imported on one peer reach the other and survive a restart.
func TestScale100kPins(t *testing.T) {
	t.Parallel()
	const n = 100000
	b := bins(t, "1.1.6", "")
	peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 2, "crdt", b)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	mustRun(t, b.Service, "--config", peers[0].Dir, "state", "import", "-f", writePins(t, n))
	t.Logf("import %v", time.Since(t0))
	prs := startAll(t, b, peers)
	waitPins(t, peers[0], n, 10*time.Second)
	t.Logf("p0 %v", time.Since(t0))
	waitPins(t, peers[1], n, 20*time.Second)
	t.Logf("p1 %v", time.Since(t0))
	stop(t, prs...)
	t.Logf("stop %v", time.Since(t0))
	if got := exportCount(t, b, peers[1]); got != n {
		t.Errorf("export after restart: %d, want %d", got, n)
	}
}
