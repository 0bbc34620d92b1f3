package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/sidecar/agent"
	"github.com/upgraded/upgraded/statebackup"
)

func TestIsStateFolder(t *testing.T) {
	for name, want := range map[string]bool{
		"raft": true, "raft.old.0": true, "raft.old.12": true, "pebble": true, "badger": true, "badger3": true,
		"leveldb": true, "pebble.replaced-20260124T113508Z": true, "raft.replaced-20260124T113508Z-2": true,
		"ipfs": false, "raftx": false, "run": false, "peerstore": false, ".pebble.restoring-1": false,
	} {
		if got := isStateFolder(name); got != want {
			t.Errorf("isStateFolder(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestFolderOf(t *testing.T) {
	d := &Daemon{cfg: &config.Config{ClusterConfig: "/c"}}
	for _, tc := range []struct {
		kind   statebackup.Kind
		folder string
		want   string
	}{
		{statebackup.KindStateFolder, "raft", "/c/raft"},
		{statebackup.KindStateFolder, "raft.old.3", "/c/raft"}, // an old raft folder goes back as the one a peer reads
		{statebackup.KindStateFolder, "pebble", "/c/pebble"},
		{statebackup.KindStateFolder, "pebble.replaced-20260124T113508Z", "/c/pebble"},
		{statebackup.KindStateFolder, "../etc", ""},
		{statebackup.KindStateFolder, "a/b", ""},
		{statebackup.KindStateFolder, "", ""},
		{statebackup.KindLiveExport, "", ""},
	} {
		if got := d.folderOf(&statebackup.Manifest{Kind: tc.kind, Folder: tc.folder}); got != tc.want {
			t.Errorf("folderOf(%s %q) = %q, want %q", tc.kind, tc.folder, got, tc.want)
		}
	}
}

func TestStateFolderInfos(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"raft/raft.db", "raft/snapshots/1/state.bin", "raft.old.0/raft.db", "ipfs/x"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := stateFolderInfos(dir)
	if len(got) != 2 || got[0].Name != "raft" || got[0].Size != 10 || got[1].Name != "raft.old.0" || got[1].Size != 5 {
		t.Fatalf("state folders %+v, want raft (10 bytes) and raft.old.0 (5 bytes)", got)
	}
	if got[0].Modified.IsZero() {
		t.Fatal("no modification time")
	}
}

func TestRecoveryHolds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps [][2]string // recovery, step: begin then done unless step ends with "+begin"
		hold  bool
	}{
		{"no recovery", nil, false},
		{"cleaned, not joined", [][2]string{{"recover-1", jRecoverClean}}, true},
		{"cleaned and joined", [][2]string{{"recover-1", jRecoverClean}, {"recover-1", jRecoverJoin}}, false},
		{"rebuild begun only", [][2]string{{"recover-1", jRecoverRebuild + "+begin"}}, true},
		{"rebuilt", [][2]string{{"recover-1", jRecoverRebuild}}, false},
		// Only the newest recovery counts: a newer one that joined the peer settles an older one that cleaned it.
		{"superseded", [][2]string{{"recover-1", jRecoverClean}, {"recover-2", jRecoverClean}, {"recover-2", jRecoverJoin}}, false},
		{"plan journals do not count", [][2]string{{"plan-1", jRecoverClean}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := agent.OpenJournal(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.steps {
				step, beginOnly := strings.CutSuffix(s[1], "+begin")
				if err := j.Begin(s[0], step, nil); err != nil {
					t.Fatal(err)
				}
				if !beginOnly {
					if err := j.Done(s[0], step, nil); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, hold := recoveryHolds(j); hold != tc.hold {
				t.Fatalf("hold = %v, want %v", hold, tc.hold)
			}
		})
	}
}

func TestBusyHostsRefusesWhileAStepRuns(t *testing.T) {
	idle := statebackup.HostInventory{Host: "12D3KooWidle"}
	busy := statebackup.HostInventory{Host: "12D3KooWbusy", Busy: "rebuild of recover-1"}
	if err := busyHosts([]statebackup.HostInventory{idle, idle}); err != nil {
		t.Fatalf("idle hosts refused: %v", err)
	}
	if err := busyHosts([]statebackup.HostInventory{idle, busy}); err == nil || !strings.Contains(err.Error(), "rebuild of recover-1") {
		t.Fatalf("a busy host was not named: %v", err)
	}
}
