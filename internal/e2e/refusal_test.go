package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/upgraded/upgraded/coordination"
	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/internal/harness"
)

// TestRefusedAnnouncements: every bad announcement is refused with its reason
// and changes nothing.
func TestRefusedAnnouncements(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 4})
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	arts := []plan.Artifact{{Source: rel[3], SHA256: rel[5]}, {Source: rel[7], SHA256: rel[9]}}
	operator, err := envelope.LoadKeyFile(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	strangerFile := filepath.Join(t.TempDir(), "stranger.key")
	if _, err := envelope.GenerateKeyFile(strangerFile); err != nil {
		t.Fatal(err)
	}
	stranger, err := envelope.LoadKeyFile(strangerFile)
	if err != nil {
		t.Fatal(err)
	}
	cl := control.NewClient(c.Socket(1))
	now := time.Now()
	seal := func(k crypto.PrivKey, a *plan.Announcement) []byte {
		t.Helper()
		b, err := coordination.SealAnnouncement(k, a)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fresh := func(version string) *plan.Announcement {
		a, err := coordination.NewAnnouncement(version, arts, plan.Standard, false, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	expired := fresh("1.1.6")
	expired.IssuedAt, expired.ExpiresAt = now.Add(-2*time.Hour), now.Add(-time.Hour)
	forged := seal(operator, fresh("1.1.6"))
	forged[len(forged)/2] ^= 0x01
	cases := []struct {
		name string
		env  []byte
		want string
	}{
		{"unsigned garbage", []byte(`{"type":"upgraded/announcement/v1","payload":"e30="}`), "not trusted"},
		{"signed by an untrusted key", seal(stranger, fresh("1.1.6")), "not trusted"},
		{"forged (one bit flipped)", forged, "not trusted"},
		{"expired", seal(operator, expired), "expired"},
		{"downgrade", seal(operator, fresh("1.0.7")), "older than the running version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.Announce(ctx, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a refusal mentioning %q, got %v", tc.want, err)
			}
		})
	}
	st, err := c.Status(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Plan != nil {
		t.Fatalf("a refused announcement created plan %s", st.Plan.ID)
	}

	// A good one is accepted; the same bytes again are a replay; another
	// plan while it runs is refused.
	good := seal(operator, fresh("1.1.6"))
	p, err := cl.Announce(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Announce(ctx, good); !isRefusal(err, "already seen") {
		t.Fatalf("replay: got %v", err)
	}
	if _, err := cl.Announce(ctx, seal(operator, fresh("1.1.7"))); !isRefusal(err, "another plan is in progress") {
		t.Fatalf("second plan: got %v", err)
	}
	end, err := c.WaitPlan(ctx, 0, p.ID)
	if err != nil || !end.Succeeded() {
		t.Fatalf("the good plan did not succeed: %v %+v", err, end)
	}
	if _, err := cl.Announce(ctx, good); !isRefusal(err, "already seen") {
		t.Fatalf("replay after the end: got %v", err)
	}
	requireAll(t, ctx, c, "1.1.6", 4)
}

func isRefusal(err error, want string) bool {
	return err != nil && strings.Contains(err.Error(), want)
}

// peerPIDs reads the exec runners' pidfiles.
func peerPIDs(t *testing.T, c *harness.Cluster) []int {
	t.Helper()
	var pids []int
	for _, h := range c.Hosts {
		b, err := os.ReadFile(filepath.Join(h.ConfigDir, "run", "ipfs-cluster-service.pid"))
		if err != nil {
			t.Fatal(err)
		}
		var rec struct{ PID int }
		if err := json.Unmarshal(b, &rec); err != nil || rec.PID == 0 {
			t.Fatal(errors.Join(err, errors.New("pidfile without pid: "+string(b))))
		}
		pids = append(pids, rec.PID)
	}
	return pids
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
