package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/internal/harness"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/statebackup"
)

// TestRecover drives `upgraded recover` on one cluster, in order: a dry run changes nothing; with the state
// folders deleted on 2 of 3 hosts in a way the peers cannot heal from by themselves (checked first), recover
// rebuilds one peer from the best copy and the others join it, every one ending with the full pinset and the old
// state kept; and with the state deleted on every host, recover --from an export rebuilds the whole pinset.
func TestRecover(t *testing.T) {
	for _, consensus := range []string{"crdt", "raft"} {
		t.Run(consensus, func(t *testing.T) { testRecover(t, consensus) })
	}
}

func testRecover(t *testing.T, consensus string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const pins = 12
	c := newCluster(t, ctx, scenario{peers: 3, consensus: consensus, from: "1.0.8", pins: pins})
	export := exportOf(t, ctx, c, 0)
	recoverCLI := func(args ...string) (string, error) {
		return c.CLI(ctx, append([]string{"recover", "--config", c.Hosts[0].ConfigDir}, args...)...)
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		pids := peerPIDs(t, c)
		out, err := recoverCLI("--dry-run")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"HOST", "LIVE PINS", "chosen: live pinset", "holds the most pins", "steps:",
			"stop-and-clean", "rebuild", "join", "dry run: nothing was changed"} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run output lacks %q:\n%s", want, out)
			}
		}
		// Without --yes nor anyone to answer the question, nothing is carried out either.
		if out, err := recoverCLI(); err == nil || !strings.Contains(err.Error(), "not confirmed") {
			t.Fatalf("recover without --yes and no answer: %v\n%s", err, out)
		}
		if now := peerPIDs(t, c); !equalInts(now, pids) {
			t.Fatalf("a dry run restarted a peer: pids %v -> %v", pids, now)
		}
		for _, h := range c.Hosts {
			if js, _ := filepath.Glob(filepath.Join(h.ConfigDir, "journal", "recover-*")); len(js) > 0 {
				t.Fatalf("a dry run journaled steps on host %d: %v", h.Index, js)
			}
		}
		requireAll(t, ctx, c, "1.0.8", pins)
	})

	t.Run("state deleted on 2 of 3 hosts", func(t *testing.T) {
		want := loseStateOnTwoHosts(t, ctx, c, consensus)
		requireStaysShort(t, ctx, c, pins, 1, 2)
		rep := recoverJSON(t, recoverCLI, "--yes")
		if rep.Choice == nil || rep.Choice.Source.Pins != pins || rep.Choice.Source.Kind != want ||
			rep.Choice.Source.Host != c.HostID(ctx, 0) || rep.Choice.Reason == "" {
			t.Fatalf("choice %+v, want the %s of %d pins on host 0 with a reason", rep.Choice, want, pins)
		}
		if len(rep.Results) != 8 {
			t.Fatalf("%d steps carried out, want 8 (2 cleans, rebuild, verify, 2 joins and verifies): %+v", len(rep.Results), rep.Results)
		}
		for _, r := range rep.Results {
			if !r.OK {
				t.Fatalf("step %s on %s failed: %s", r.Step.Action, r.Step.Host, r.Error)
			}
			if r.Step.Action == statebackup.ActClean && !strings.Contains(r.Detail, "copied to backups") {
				t.Errorf("a cleaned host does not say where its old state went: %q", r.Detail)
			}
			if r.Step.Action == statebackup.ActClean && consensus == "raft" && !strings.Contains(r.Detail, "raft.old.") {
				t.Errorf("a cleaned raft host does not say its raft folder was kept as raft.old.N: %q", r.Detail)
			}
		}
		requireAll(t, ctx, c, "1.0.8", pins)
		// Every host journaled its destructive step under the recovery's ID.
		for _, h := range c.Hosts {
			b, err := os.ReadFile(filepath.Join(h.ConfigDir, "journal", rep.ID+".jsonl"))
			if err != nil || !strings.Contains(string(b), `"event":"done"`) {
				t.Fatalf("host %d: journal of %s: %v %s", h.Index, rep.ID, err, b)
			}
		}
	})

	t.Run("from an export after the state was lost everywhere", func(t *testing.T) {
		wipeState(t, ctx, c, 0, 1, 2)
		requireLost(t, ctx, c)
		// The backups the last recovery took are now the best copies; --from overrides them.
		out, err := recoverCLI("--dry-run")
		if err != nil || !strings.Contains(out, "chosen: backup") {
			t.Fatalf("recover --dry-run with every live pinset empty: %v\n%s", err, out)
		}
		rep := recoverJSON(t, recoverCLI, "--yes", "--from", export)
		if rep.Choice.Source.Kind != statebackup.SourceFile || rep.Plan.Rebuild != c.HostID(ctx, 0) {
			t.Fatalf("--from chose %+v rebuilt on %s, want the file on host 0", rep.Choice.Source, rep.Plan.Rebuild)
		}
		requireAll(t, ctx, c, "1.0.8", pins)
	})
}

// TestRecoverReadsAFolderCopyWithTheVersionThatWroteIt: the hosts now run 0.14.5 and every peer lost its state; the
// only copy is a copy of a pebble datastore made under 1.0.8, a format 0.14.5 does not read (put back in place, it
// would start an empty peer beside it). recover exports the copy with 1.0.8, still in the binary store, imports it
// with 0.14.5, and every peer ends on 0.14.5 with the full pinset.
func TestRecoverReadsAFolderCopyWithTheVersionThatWroteIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const pins = 12
	c := newCluster(t, ctx, scenario{peers: 3, consensus: "crdt", from: "1.0.8", pins: pins})
	stopDaemons(t, ctx, c, 0, 1, 2)
	store, err := statebackup.Open(filepath.Join(c.Hosts[0].ConfigDir, "backups"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := store.CopyFolder(ctx, filepath.Join(c.Peers[0].Dir, "pebble"), statebackup.Meta{ClusterVersion: "1.0.8",
		PeerID: c.Peers[0].PeerID, Consensus: "crdt", Note: "taken while the peer was stopped, as a plan takes it"})
	if err != nil {
		t.Fatal(err)
	}
	old, err := simtest.Build(ctx, buildDir, simtest.BuildSpec{Version: "0.14.5"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Hosts {
		deleteState(t, c, i)
		bins, err := binstore.Open(filepath.Join(c.Hosts[i].ConfigDir, "bin"))
		if err != nil {
			t.Fatal(err)
		}
		if err := bins.Import("0.14.5", old.Service, old.Ctl); err != nil {
			t.Fatal(err)
		}
		if err := bins.Activate("0.14.5"); err != nil {
			t.Fatal(err)
		}
	}
	startDaemons(t, ctx, c, 0, 1, 2)
	waitAnswering(t, ctx, c, 0, 1, 2)
	requireLost(t, ctx, c)

	rep := recoverJSON(t, func(args ...string) (string, error) {
		return c.CLI(ctx, append([]string{"recover", "--config", c.Hosts[0].ConfigDir}, args...)...)
	}, "--yes")
	if rep.Choice.Source.Kind != statebackup.SourceFolder || rep.Choice.Source.Backup != cp.ID {
		t.Fatalf("chose %+v, want the state-folder copy %s", rep.Choice.Source, cp.ID)
	}
	requireAll(t, ctx, c, "0.14.5", pins)
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	read := false
	for _, m := range list {
		read = read || (m.Kind == statebackup.KindOfflineExport && m.ClusterVersion == "1.0.8" && m.Pins == pins)
	}
	if !read {
		t.Fatalf("no offline export of %d pins made by 1.0.8 among host 0's backups: %+v", pins, list)
	}
}

// recoverJSON runs recover with --json and decodes its report; a failed recovery fails the test with its report.
func recoverJSON(t *testing.T, run func(...string) (string, error), args ...string) *control.RecoverReport {
	t.Helper()
	out, err := run(append(args, "--json")...)
	var rep control.RecoverReport
	if jerr := json.Unmarshal([]byte(firstLine(out)), &rep); jerr != nil {
		t.Fatalf("recover printed %q (%v): %v", out, err, jerr)
	}
	if err != nil || rep.Error != "" {
		t.Fatalf("recover failed: %v; report %+v", err, rep)
	}
	return &rep
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// wipeState stops the daemons of hosts (their peers stop with them), deletes their peers' state folders and
// starts the daemons again: the peers come back with no pinset of their own.
func wipeState(t *testing.T, ctx context.Context, c *harness.Cluster, hosts ...int) {
	t.Helper()
	stopDaemons(t, ctx, c, hosts...)
	for _, i := range hosts {
		deleteState(t, c, i)
	}
	startDaemons(t, ctx, c, hosts...)
	waitAnswering(t, ctx, c, hosts...)
}

func stopDaemons(t *testing.T, ctx context.Context, c *harness.Cluster, hosts ...int) {
	t.Helper()
	for _, i := range hosts {
		if err := c.KillDaemon(ctx, i, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
}

func startDaemons(t *testing.T, ctx context.Context, c *harness.Cluster, hosts ...int) {
	t.Helper()
	for _, i := range hosts {
		if err := c.StartDaemon(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
}

func deleteState(t *testing.T, c *harness.Cluster, i int) {
	t.Helper()
	for _, f := range []string{"raft", "pebble", "badger", "badger3", "leveldb"} {
		if err := os.RemoveAll(filepath.Join(c.Peers[i].Dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitAnswering waits until the peers of hosts answer their REST API.
func waitAnswering(t *testing.T, ctx context.Context, c *harness.Cluster, hosts ...int) {
	t.Helper()
	err := simtest.WaitFor(ctx, fmt.Sprintf("the peers of hosts %v to answer", hosts), func() bool {
		views := c.Views(ctx)
		for _, i := range hosts {
			if views[i].Err != nil {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

// loseStateOnTwoHosts deletes the state of hosts 1 and 2 so that their peers cannot get it back by themselves,
// and returns the kind of copy recover must then find on host 0:
//   - raft: hosts 1 and 2 also forget the cluster's peerset (init_peerset emptied, as on peers that joined with
//     --bootstrap), so they come back as one-peer clusters that do not know host 0, whose live pinset is the only
//     full copy;
//   - crdt: a crdt peer would pull every pin from any live peer that holds them, so host 0's peer is stopped first
//     and its datastore corrupted: it cannot start, and the only full copy is host 0's backup.
func loseStateOnTwoHosts(t *testing.T, ctx context.Context, c *harness.Cluster, consensus string) statebackup.SourceKind {
	t.Helper()
	if consensus == "raft" {
		stopDaemons(t, ctx, c, 1, 2)
		for _, i := range []int{1, 2} {
			deleteState(t, c, i)
			err := simtest.EditConfig(c.Peers[i], func(cfg map[string]any) {
				cfg["consensus"].(map[string]any)["raft"].(map[string]any)["init_peerset"] = []string{}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		startDaemons(t, ctx, c, 1, 2)
		waitAnswering(t, ctx, c, 0, 1, 2)
		return statebackup.SourceLive
	}
	stopDaemons(t, ctx, c, 0, 1, 2)
	deleteState(t, c, 1)
	deleteState(t, c, 2)
	// Whatever the datastore holds, a snapshot that is not one stops the peer at load, like a damaged datastore.
	bad := filepath.Join(c.Peers[0].Dir, "pebble", "pins.snapshot")
	if err := os.WriteFile(bad, []byte("damaged\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemons(t, ctx, c, 0, 1, 2)
	waitAnswering(t, ctx, c, 1, 2)
	return statebackup.SourceBackup
}

// requireStaysShort checks that, without recover, the peers of hosts answer without the full pinset and do not get
// it back within a few seconds (a dozen of the simulator's sync rounds): what recover then restores is its doing.
func requireStaysShort(t *testing.T, ctx context.Context, c *harness.Cluster, pins int, hosts ...int) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var views []harness.PeerView
	err := simtest.WaitFor(wctx, "a peer to get the pinset back by itself", func() bool {
		views = c.Views(wctx)
		for _, i := range hosts {
			if views[i].Err == nil && views[i].Pins >= pins {
				return true
			}
		}
		return false
	})
	if err == nil {
		t.Fatalf("a wiped peer got the full pinset back without recover (%+v): the test would not show what recover does", views)
	}
	for _, i := range hosts {
		if v := c.Views(ctx)[i]; v.Err != nil || v.Pins != 0 {
			t.Fatalf("peer %d after its state was deleted: %+v, want it answering with no pin", i, v)
		}
	}
}

// requireLost checks that no peer holds a pin any more: the only copy left is outside the running cluster.
func requireLost(t *testing.T, ctx context.Context, c *harness.Cluster) {
	t.Helper()
	for i, v := range c.Views(ctx) {
		if v.Err != nil || v.Pins != 0 {
			t.Fatalf("peer %d after its state was deleted: %+v", i, v)
		}
	}
}

// exportOf takes a live backup on host i and copies its export out of the backup folder, as an operator keeps one.
func exportOf(t *testing.T, ctx context.Context, c *harness.Cluster, i int) string {
	t.Helper()
	out, err := c.CLI(ctx, "backup", "create", "--json", "--config", c.Hosts[i].ConfigDir)
	if err != nil {
		t.Fatal(err)
	}
	var m statebackup.Manifest
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("backup create printed %q: %v", out, err)
	}
	data, err := os.ReadFile(filepath.Join(c.Hosts[i].ConfigDir, "backups", m.File))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pinset.ndjson.gz")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
