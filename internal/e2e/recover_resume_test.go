package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/harness"
)

// TestRecoverAfterTheOrchestratorDies kills (SIGKILL) the daemon that carries out a recovery in the middle of it,
// on a raft cluster whose state was deleted on 2 of 3 hosts (the wiped peers cannot heal by themselves):
//   - killed in its own rebuild, after its peer's live pinset was stored as a backup and while the peer is being
//     stopped and cleaned, the daemon resumes the recovery when it restarts, from that backup, and every peer ends
//     with the full pinset;
//   - killed after cleaning its own peer and not restarted, the recovery is run again from another host (refused
//     while a step the dead daemon asked for still runs on some host), which leaves the dead one untouched; when
//     the dead daemon comes back it keeps its cleaned peer stopped and does not resume its old recovery, superseded
//     by the newer one; a third recover brings it back.
func TestRecoverAfterTheOrchestratorDies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	const pins = 12
	c := newCluster(t, ctx, scenario{peers: 3, consensus: "raft", from: "1.0.8", pins: pins})
	recoverOn := func(i int) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := c.CLI(ctx, "recover", "--config", c.Hosts[i].ConfigDir, "--yes", "--json")
			done <- err
		}()
		return done
	}

	t.Run("killed in its own rebuild, resumed at restart", func(t *testing.T) {
		loseStateOnTwoHosts(t, ctx, c, "raft")
		requireStaysShort(t, ctx, c, pins, 1, 2)
		done := recoverOn(0)
		id := waitJournaled(t, ctx, c, 0, "", "recover-rebuild", "begin")
		if err := c.CrashDaemon(ctx, 0, nil); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err == nil {
			t.Fatal("the recover command answered success though its daemon was killed")
		}
		if ended := waitRecoveryEnded(t, ctx, c, 0, id); ended != "done" {
			t.Fatalf("the resumed recovery %s ended %q, want done", id, ended)
		}
		requireAll(t, ctx, c, "1.0.8", pins)
		log, _ := os.ReadFile(c.Hosts[0].LogPath)
		if !bytes.Contains(log, []byte("resuming it")) {
			t.Fatal("daemon 0's log does not say it resumed the recovery")
		}
		for _, l := range bytes.Split(log, []byte("\n")) {
			if bytes.Contains(l, []byte("earlier run of this rebuild")) || bytes.Contains(l, []byte("left stopped")) {
				t.Logf("daemon 0: %s", l)
			}
		}
	})

	t.Run("killed and not restarted, run again from another host", func(t *testing.T) {
		loseStateOnTwoHosts(t, ctx, c, "raft")
		requireStaysShort(t, ctx, c, pins, 1, 2)
		last := newestRecoveryOn(t, c, 1)
		done := recoverOn(1)
		first := waitJournaled(t, ctx, c, 1, last, "recover-clean", "done")
		if err := c.KillDaemon(ctx, 1, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err == nil {
			t.Fatal("the recover command answered success though its daemon was killed")
		}
		on2 := func(args ...string) (string, error) {
			return c.CLI(ctx, append([]string{"recover", "--config", c.Hosts[2].ConfigDir}, args...)...)
		}
		// A step the dead daemon had asked for may still run on its host: recover refuses until it ended.
		err := simtest.WaitFor(ctx, "no host to carry out a step of the dead daemon's recovery", func() bool {
			out, err := on2("--dry-run")
			return err == nil || !strings.Contains(out+err.Error(), "still carrying out")
		})
		if err != nil {
			t.Fatal(err)
		}
		rep := recoverJSON(t, on2, "--yes")
		if len(rep.Plan.Untouched) != 1 || rep.Plan.Untouched[0] != hostIDOf(c, 1) {
			t.Fatalf("the second recovery should leave the dead host alone: untouched %v", rep.Plan.Untouched)
		}
		requirePeers(t, ctx, c, pins, 0, 2)
		if err := c.StartDaemon(1); err != nil {
			t.Fatal(err)
		}
		if ended := waitRecoveryEnded(t, ctx, c, 1, first); ended != "superseded by "+rep.ID {
			t.Fatalf("the dead daemon's recovery %s ended %q, want superseded by %s", first, ended, rep.ID)
		}
		if log, _ := os.ReadFile(c.Hosts[1].LogPath); !bytes.Contains(log, []byte("the peer is left stopped at start-up")) {
			t.Fatal("daemon 1's log does not say it kept its cleaned peer stopped")
		}
		if v := c.Views(ctx)[1]; v.Err == nil {
			t.Fatalf("the cleaned peer of the restarted daemon runs (%+v): it should wait for a recovery", v)
		}
		recoverJSON(t, on2, "--yes")
		requireAll(t, ctx, c, "1.0.8", pins)
	})
}

// waitJournaled waits until host i journals event of step for a recovery newer than after, and returns its ID.
func waitJournaled(t *testing.T, ctx context.Context, c *harness.Cluster, i int, after, step, event string) string {
	t.Helper()
	var id string
	err := simtest.WaitFor(ctx, "host to journal "+event+" of "+step, func() bool {
		id = newestRecoveryOn(t, c, i)
		if id == "" || id <= after {
			return false
		}
		f, err := os.Open(filepath.Join(c.Hosts[i].ConfigDir, "journal", id+".jsonl"))
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r struct{ Step, Event string }
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.Step == step && r.Event == event {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newestRecoveryOn is the newest recovery journaled on host i, or "".
func newestRecoveryOn(t *testing.T, c *harness.Cluster, i int) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(c.Hosts[i].ConfigDir, "journal", "recover-*.jsonl"))
	sort.Strings(files)
	if len(files) == 0 {
		return ""
	}
	return strings.TrimSuffix(filepath.Base(files[len(files)-1]), ".jsonl")
}

// waitRecoveryEnded waits until the record of recovery id on host i says how it ended, and returns that.
func waitRecoveryEnded(t *testing.T, ctx context.Context, c *harness.Cluster, i int, id string) string {
	t.Helper()
	var rec struct {
		Ended string `json:"ended"`
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := simtest.WaitFor(wctx, "recovery "+id+" to end", func() bool {
		b, err := os.ReadFile(filepath.Join(c.Hosts[i].ConfigDir, "recoveries", id+".json"))
		return err == nil && json.Unmarshal(b, &rec) == nil && rec.Ended != ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec.Ended
}

// hostIDOf is daemon i's peer ID, from the address it was set up with (the daemon may be dead).
func hostIDOf(c *harness.Cluster, i int) string {
	return c.Hosts[i].Addr[strings.LastIndex(c.Hosts[i].Addr, "/")+1:]
}

// requirePeers checks that the peers of hosts answer with at least pins pins, waiting a little for replication.
func requirePeers(t *testing.T, ctx context.Context, c *harness.Cluster, pins int, hosts ...int) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := simtest.WaitFor(wctx, "the peers to hold the pinset", func() bool {
		views := c.Views(wctx)
		for _, i := range hosts {
			if views[i].Err != nil || views[i].Pins < pins {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%v: %+v", err, c.Views(ctx))
	}
}
