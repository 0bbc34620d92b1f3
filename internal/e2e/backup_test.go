package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/internal/harness"
	"github.com/upgraded/upgraded/statebackup"
)

// TestBackupCommands drives `upgraded backup` against a running cluster: a backup is created, listed and
// verified; corrupted copies fail verify and are refused by restore with the peer untouched; and a good backup
// restored after pins were removed brings them back.
func TestBackupCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const pins = 20
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: pins})
	dir, tag := c.Hosts[0].ConfigDir, t.Name() // newCluster pinned FakeCID(tag, 0..pins-1)
	backup := func(args ...string) (string, error) {
		return c.CLI(ctx, append([]string{"backup"}, append(args, "--config", dir)...)...)
	}

	out, err := backup("create", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var m statebackup.Manifest
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("backup create --json printed %q: %v", out, err)
	}
	if m.Pins != pins || m.Kind != statebackup.KindLiveExport || m.ClusterVersion != "1.0.8" || m.SHA256 == "" {
		t.Fatalf("created backup %+v, want a live export of %d pins on 1.0.8 with its sha256", m, pins)
	}
	requireListed(t, ctx, c, dir, m.ID)
	if out, err := backup("verify", m.ID); err != nil || !strings.Contains(out, "is good") {
		t.Fatalf("verify of a fresh backup: %v %s", err, out)
	}

	t.Run("corrupted backups are refused", func(t *testing.T) {
		pids := peerPIDs(t, c)
		for _, tc := range []struct {
			name, want string
			corrupt    func([]byte, *statebackup.Manifest) []byte
		}{
			{"flipped-byte", "checksum", func(b []byte, _ *statebackup.Manifest) []byte { b[len(b)/2] ^= 0x20; return b }},
			{"truncated", "checksum", func(b []byte, _ *statebackup.Manifest) []byte { return b[:len(b)/2] }},
			{"count-mismatch", "pin count", func(b []byte, cm *statebackup.Manifest) []byte { cm.Pins = pins + 3; return b }},
		} {
			id := copyBackup(t, filepath.Join(dir, "backups"), &m, tc.name, tc.corrupt)
			out, err := backup("verify", id)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: verify: %v %s, want a failure about the %s", tc.name, err, out, tc.want)
			}
			out, err = backup("restore", id)
			if err == nil || !strings.Contains(err.Error(), "refusing") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: restore: %v %s, want a refusal about the %s", tc.name, err, out, tc.want)
			}
		}
		requireAll(t, ctx, c, "1.0.8", pins)
		if now := peerPIDs(t, c); !equalInts(now, pids) {
			t.Fatalf("a refused restore restarted a peer: pids %v -> %v", pids, now)
		}
	})

	t.Run("restore brings removed pins back", func(t *testing.T) {
		for k := range 5 {
			cid := harness.FakeCID(tag, k)
			if code, body, err := simtest.Do(ctx, "DELETE", c.Peers[0].APIURL, "/pins/"+cid); err != nil || code != 200 {
				t.Fatalf("unpinning %s: %d %s %v", cid, code, body, err)
			}
		}
		err := simtest.WaitFor(ctx, "peer 0 to hold 15 pins", func() bool {
			return simtest.PinCount(ctx, c.Peers[0].APIURL) == pins-5
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := backup("restore", m.ID, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rep control.RestoreReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("backup restore --json printed %q: %v", out, err)
		}
		if rep.Pins != pins {
			t.Fatalf("restore reported %d pins, want %d", rep.Pins, pins)
		}
		if n := simtest.PinCount(ctx, c.Peers[0].APIURL); n != pins {
			t.Fatalf("peer 0 holds %d pins after the restore, want %d", n, pins)
		}
		requireAll(t, ctx, c, "1.0.8", pins)
	})
}

// requireListed checks that `backup list` shows id, in its table and in its JSON.
func requireListed(t *testing.T, ctx context.Context, c *harness.Cluster, dir, id string) {
	t.Helper()
	out, err := c.CLI(ctx, "backup", "list", "--config", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "ID") || !strings.Contains(out, id) || !strings.Contains(out, "live-export") {
		t.Fatalf("backup list does not show %s:\n%s", id, out)
	}
	out, err = c.CLI(ctx, "backup", "list", "--config", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []statebackup.Manifest
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) == 0 || list[0].ID != id {
		t.Fatalf("backup list --json = %q (%v), want %s first", out, err, id)
	}
}

// copyBackup stores a copy of backup m under a new ID, its data file and manifest passed through corrupt, the
// way an operator's disk might have damaged one.
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
	mj, err := json.Marshal(&cp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cp.File), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cp.ID+".json"), mj, 0o600); err != nil {
		t.Fatal(err)
	}
	return cp.ID
}
