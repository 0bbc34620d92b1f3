package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/cluster"
	"github.com/upgraded/upgraded/statebackup"
)

func TestUntilDue(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		interval time.Duration
		last     time.Time
		want     time.Duration
	}{
		{"no backup yet: due now", time.Hour, time.Time{}, 0},
		{"last one 10 minutes ago", time.Hour, now.Add(-10 * time.Minute), 50 * time.Minute},
		{"last one exactly an interval ago", time.Hour, now.Add(-time.Hour), 0},
		{"last one long ago", time.Hour, now.Add(-48 * time.Hour), 0},
		{"last one dated in the future (clock set back): at most one interval", time.Hour, now.Add(5 * time.Hour), time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := untilDue(now, tc.interval, tc.last); got != tc.want {
				t.Fatalf("untilDue = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSkipReason(t *testing.T) {
	cases := []struct {
		name    string
		plan    string
		peerErr error
		want    string // substring; "" means take the backup
	}{
		{"idle and answering: take it", "", nil, ""},
		{"a plan runs", "p1", nil, "plan p1 is running"},
		{"the peer is down", "", errors.New("connection refused"), "REST API does not answer (connection refused)"},
		{"both: the plan is the reason", "p1", errors.New("connection refused"), "plan p1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := skipReason(tc.plan, tc.peerErr)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("skipReason = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct{ interval, want time.Duration }{
		{time.Second, time.Second}, {retryCap, retryCap}, {24 * time.Hour, retryCap},
	} {
		if got := retryDelay(tc.interval); got != tc.want {
			t.Errorf("retryDelay(%s) = %s, want %s", tc.interval, got, tc.want)
		}
	}
}

func TestNewestLiveIgnoresOfflineBackups(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	list := []*statebackup.Manifest{
		{Kind: statebackup.KindStateFolder, Created: t0.Add(3 * time.Hour)},
		{Kind: statebackup.KindOfflineExport, Created: t0.Add(2 * time.Hour)},
		{Kind: statebackup.KindLiveExport, Created: t0.Add(time.Hour)},
		{Kind: statebackup.KindLiveExport, Created: t0},
	}
	if got := newestLive(list); !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("newestLive = %s, want the newer live export", got)
	}
	if got := newestLive(list[:2]); !got.IsZero() {
		t.Fatalf("newestLive without live exports = %s, want zero (due now)", got)
	}
}

func TestPlansToKeep(t *testing.T) {
	cases := []struct {
		name          string
		current, last string
		want          []string
	}{
		{"no plan ever", "", "", nil},
		{"a plan ended", "", "p1", []string{"p1"}},
		{"a plan runs", "p2", "p2", []string{"p2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := plan.NewState()
			s.Current, s.Last = tc.current, tc.last
			if got := plansToKeep(s); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("plansToKeep = %v, want %v", got, tc.want)
			}
		})
	}
}

// fakePeer is a cluster peer's REST API on 127.0.0.1: /version and /allocations?filter=all.
type fakePeer struct {
	pins atomic.Int64
	down atomic.Bool
	srv  *httptest.Server
}

func newFakePeer(t *testing.T, pins int) *fakePeer {
	t.Helper()
	p := &fakePeer{}
	p.pins.Store(int64(pins))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: p}}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *fakePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.down.Load() {
		http.Error(w, "peer is down", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/version":
		_, _ = w.Write([]byte(`{"version":"1.1.6"}`))
	case "/allocations":
		for i := range int(p.pins.Load()) {
			fmt.Fprintf(w, `{"cid":"bafkreitest%06d","name":"pin-%d","type":"pin","allocations":[]}`+"\n", i, i)
		}
	default:
		http.NotFound(w, r)
	}
}

// fakeRunner records what it was asked to do.
type fakeRunner struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeRunner) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeRunner) Start(context.Context, sidecar.StartOptions) error {
	f.record("start")
	return nil
}
func (f *fakeRunner) Stop(context.Context) error { f.record("stop"); return nil }
func (f *fakeRunner) Status(context.Context) (sidecar.Status, error) {
	return sidecar.Status{Running: true}, nil
}

func (f *fakeRunner) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// testDaemon is a Daemon with only what the backup code uses: config, plan state, runner and the peer's API.
func testDaemon(t *testing.T, peer *fakePeer, log *zap.Logger) (*Daemon, *fakeRunner) {
	t.Helper()
	cfg := config.Default(t.TempDir())
	cfg.ClusterConfig = filepath.Join(cfg.Dir, "cluster")
	cfg.Timeouts.Verify = 5 * time.Second
	r := &fakeRunner{}
	d := &Daemon{cfg: cfg, log: log, fsm: plan.NewFSM(log), runner: r, api: cluster.NewClient(peer.srv.URL),
		svc: &cluster.ServiceConfig{Consensus: "crdt"}, peerID: "12D3KooWtestpeer"}
	return d, r
}

func TestRestoreRefusesABadBackupAndTouchesNothing(t *testing.T) {
	ctx := context.Background()
	peer := newFakePeer(t, 40)
	d, runner := testDaemon(t, peer, zaptest.NewLogger(t))
	good, err := d.CreateBackup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if good.Pins != 40 || good.PeerID != d.peerID || good.ClusterVersion != "1.1.6" {
		t.Fatalf("manifest = %+v, want 40 pins of peer %s on 1.1.6", good, d.peerID)
	}
	dir := d.cfg.BackupDir()
	cases := map[string]func(data []byte, m *statebackup.Manifest) []byte{
		"one flipped byte": func(data []byte, _ *statebackup.Manifest) []byte {
			data[len(data)/2] ^= 0x01
			return data
		},
		"truncated": func(data []byte, _ *statebackup.Manifest) []byte { return data[:len(data)-7] },
		"manifest count disagrees": func(data []byte, m *statebackup.Manifest) []byte {
			m.Pins++
			return data
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			id := copyBackup(t, dir, good, strings.ReplaceAll(name, " ", "_"), corrupt)
			if _, err := d.VerifyBackup(ctx, id); err == nil {
				t.Fatal("verify accepted a corrupted backup")
			}
			_, err := d.RestoreBackup(ctx, id)
			if err == nil || !strings.Contains(err.Error(), "refusing") {
				t.Fatalf("restore of a corrupted backup: %v, want a refusal", err)
			}
			if calls := runner.Calls(); len(calls) != 0 {
				t.Fatalf("a refused restore touched the peer: %v", calls)
			}
			if left, _ := os.ReadDir(filepath.Join(d.cfg.StagingDir(), "restore")); len(left) != 0 {
				t.Fatalf("a refused restore left files to import: %v", left)
			}
		})
	}
	if _, err := d.VerifyBackup(ctx, good.ID); err != nil {
		t.Fatalf("the original backup no longer verifies: %v", err)
	}
}

// copyBackup stores a copy of backup m under a new ID, its data and manifest passed through corrupt.
func copyBackup(t *testing.T, dir string, m *statebackup.Manifest, tag string,
	corrupt func([]byte, *statebackup.Manifest) []byte) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, m.File))
	if err != nil {
		t.Fatal(err)
	}
	cp := *m
	cp.ID = m.ID + "-" + tag
	cp.File = cp.ID + strings.TrimPrefix(m.File, m.ID)
	data = corrupt(data, &cp)
	mj, _ := json.Marshal(&cp)
	if err := os.WriteFile(filepath.Join(dir, cp.File), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cp.ID+".json"), mj, 0o600); err != nil {
		t.Fatal(err)
	}
	return cp.ID
}

func TestRestoreRefusesAStateFolderOutsideTheClusterFolder(t *testing.T) {
	ctx := context.Background()
	d, runner := testDaemon(t, newFakePeer(t, 1), zaptest.NewLogger(t))
	store, err := d.backupStore()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "raft")
	if err := os.MkdirAll(src, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "raft.db"), []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := store.CopyFolder(ctx, src, statebackup.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	// A manifest edited to point elsewhere still has an intact data file: only the folder name is wrong.
	path := filepath.Join(store.Dir(), m.ID+".json")
	raw, _ := os.ReadFile(path)
	raw = []byte(strings.Replace(string(raw), `"folder": "raft"`, `"folder": ".."`, 1))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RestoreBackup(ctx, m.ID); err == nil || !strings.Contains(err.Error(), "not a folder of the peer") {
		t.Fatalf("restore into %q: %v, want a refusal", "..", err)
	}
	if calls := runner.Calls(); len(calls) != 0 {
		t.Fatalf("a refused restore touched the peer: %v", calls)
	}
}

func TestPruneKeepsTheNewest(t *testing.T) {
	ctx := context.Background()
	d, _ := testDaemon(t, newFakePeer(t, 3), zaptest.NewLogger(t))
	d.cfg.Backups.Keep = 2
	var ids []string
	for range 4 {
		m, err := d.CreateBackup(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	rep, err := d.PruneBackups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 2 || rep.Kept != 2 {
		t.Fatalf("prune removed %d and kept %d, want 2 and 2", len(rep.Removed), rep.Kept)
	}
	list, _ := d.ListBackups()
	if len(list) != 2 || list[0].ID != ids[3] || list[1].ID != ids[2] {
		t.Fatalf("left %v, want the two newest %v", manifestIDs(list), ids[2:])
	}
}

func manifestIDs(ms []*statebackup.Manifest) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// TestScheduledBackupsRunPruneAndSkip runs the real schedule loop: backups are taken every interval and pruned
// down to keep; while the peer does not answer, the loop skips with a log line and carries on.
func TestScheduledBackupsRunPruneAndSkip(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	peer := newFakePeer(t, 5)
	d, _ := testDaemon(t, peer, zap.New(core))
	d.cfg.Backups = config.Backups{Interval: 50 * time.Millisecond, Keep: 2}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.runBackups(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runBackups: %v", err)
		}
	}()
	seen := map[string]bool{}
	waitFor(t, 10*time.Second, "four scheduled backups, two kept", func() bool {
		list, err := d.ListBackups()
		if err != nil || len(list) > 2 {
			return false
		}
		for _, m := range list {
			seen[m.ID] = true
		}
		return len(seen) >= 4 && len(list) == 2
	})
	peer.down.Store(true)
	waitFor(t, 10*time.Second, "a skipped scheduled backup", func() bool {
		return logs.FilterMessage("scheduled backup skipped; trying again later").Len() > 0
	})
	list, _ := d.ListBackups()
	if len(list) > 2 {
		t.Fatalf("%d backups kept, want at most 2", len(list))
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		case <-tick.C:
		}
	}
}

// crashHelperEnv makes the test binary act as a daemon writing a backup from a peer that stalls mid-stream, so
// that the test can kill it there.
const crashHelperEnv = "UPGRADED_TEST_CRASH_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		crashHelper(dir)
		return
	}
	os.Exit(m.Run())
}

// crashHelper streams half a pinset into a backup in dir, tells the test so by creating dir/../streaming, and
// then stalls until it is killed.
func crashHelper(dir string) {
	streaming := filepath.Join(filepath.Dir(dir), "streaming")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/version" {
			_, _ = w.Write([]byte(`{"version":"1.1.6"}`))
			return
		}
		for i := range 20000 {
			fmt.Fprintf(w, `{"cid":"bafkreicrash%06d","name":"p","type":"pin","allocations":[]}`+"\n", i)
		}
		w.(http.Flusher).Flush()
		_ = os.WriteFile(streaming, nil, 0o600)
		<-r.Context().Done()
	}))
	defer srv.Close()
	cfg := config.Default(filepath.Dir(dir))
	d := &Daemon{cfg: cfg, log: zap.NewNop(), fsm: plan.NewFSM(zap.NewNop()), api: cluster.NewClient(srv.URL),
		svc: &cluster.ServiceConfig{Consensus: "crdt"}}
	_, err := d.CreateBackup(context.Background())
	fmt.Fprintln(os.Stderr, "crash helper: the backup ended instead of stalling:", err)
	os.Exit(3)
}

// TestCrashWhileWritingLeavesNoBackup kills (SIGKILL) a process in the middle of writing a backup: nothing may
// appear under a final name, list shows no backup, and the leftovers are recognised and removed.
func TestCrashWhileWritingLeavesNoBackup(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "backups")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, 20*time.Second, "the helper to be mid-stream", func() bool {
		_, err := os.Stat(filepath.Join(root, "streaming"))
		return err == nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper ended with %v, want killed", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("the helper wrote nothing before the kill; the test proves nothing")
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			t.Fatalf("%s is under a final name after a crash mid-write", e.Name())
		}
	}
	store, err := statebackup.Open(dir, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if list, err := store.List(); err != nil || len(list) != 0 {
		t.Fatalf("list after a crash = %v, %v; want no backup", manifestIDs(list), err)
	}
	if removed, err := store.CleanLeftovers(0); err != nil || len(removed) != len(entries) {
		t.Fatalf("CleanLeftovers removed %v (%v), want the %d leftovers", removed, err, len(entries))
	}
}
