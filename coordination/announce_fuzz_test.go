package coordination

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/plan"
)

// FuzzAnnouncement feeds arbitrary announcement payloads, sealed by a
// trusted operator key, and arbitrary envelopes through the validation every
// daemon applies (openAnnouncement, then State.CheckAnnouncement). Whatever
// it accepts must be well formed, unexpired, not issued in the future, not a
// downgrade unless allowed, and refused as a replay once proposed; nothing
// not signed by the trusted key may pass.
func FuzzAnnouncement(f *testing.F) {
	key, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		f.Fatal(err)
	}
	operator, err := peer.IDFromPrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	c := &Coordinator{cfg: Config{ClockSkew: 2 * time.Minute}, trusted: map[peer.ID]bool{operator: true}}

	arts := []plan.Artifact{{Source: "https://example.org/ipfs-cluster-service_v1.1.6_linux-amd64.tar.gz", SHA256: strings.Repeat("ab", 32)}}
	seed := func(mut func(a *plan.Announcement)) []byte {
		a := &plan.Announcement{ID: "0123456789abcdef01234567", Version: "1.1.6", Artifacts: arts, Procedure: plan.Standard,
			IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)}
		mut(a)
		b, _ := json.Marshal(a)
		return b
	}
	payloads := [][]byte{
		seed(func(*plan.Announcement) {}),
		seed(func(a *plan.Announcement) { a.Version = "1.0.7" }),
		seed(func(a *plan.Announcement) { a.Version, a.AllowDowngrade = "0.14.5", true }),
		seed(func(a *plan.Announcement) { a.ExpiresAt = now.Add(-time.Second) }),
		seed(func(a *plan.Announcement) { a.IssuedAt = now.Add(time.Hour); a.ExpiresAt = now.Add(2 * time.Hour) }),
		seed(func(a *plan.Announcement) { a.Procedure = plan.Bootstrap; a.ID = "replayed" }),
		seed(func(a *plan.Announcement) { a.Version = "v1.1.6-rc1+x" }),
		[]byte(`{}`), []byte(`null`), []byte(`{"artifacts":[{}]}`),
	}
	for _, p := range payloads {
		env, err := envelope.Seal(key, AnnounceType, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p, env)
	}

	f.Fuzz(func(t *testing.T, payload, raw []byte) {
		// Anything that is not a trusted signature is refused, however it is put together.
		if a, signer, err := c.openAnnouncement(raw, now); err == nil {
			if signer != operator {
				t.Fatalf("accepted an envelope signed by %s", signer)
			}
			checkAccepted(t, a, now)
		} else if a != nil {
			t.Fatal("announcement returned with an error")
		}

		env, err := envelope.Seal(key, AnnounceType, payload)
		if err != nil {
			return // too large to seal
		}
		a, _, err := c.openAnnouncement(env, now)
		if err != nil {
			return
		}
		checkAccepted(t, a, now)

		s := plan.NewState()
		for _, id := range []string{"A", "B", "C"} {
			if err := s.Apply(plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: id, ClusterPeer: "c" + id, Version: "1.0.8"}}, now); err != nil {
				t.Fatal(err)
			}
		}
		old := &plan.Announcement{ID: "replayed", Version: "1.1.6", Artifacts: arts, Procedure: plan.Standard,
			IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)}
		if err := s.Apply(plan.Command{Op: plan.OpReject, Announcement: old, Reason: "refused before"}, now); err != nil {
			t.Fatal(err)
		}
		if err := s.CheckAnnouncement(a, now); err != nil {
			return
		}
		if a.ID == old.ID {
			t.Fatalf("replay of refused announcement %s accepted", a.ID)
		}
		if !a.AllowDowngrade && plan.CompareVersions(a.Version, "1.0.8") < 0 {
			t.Fatalf("downgrade to %q accepted", a.Version)
		}
		if err := s.Apply(plan.Command{Op: plan.OpPropose, Announcement: a, Signer: operator.String()}, now); err != nil {
			return // refused for a reason of the state (approvals, policy), not a replay
		}
		if err := s.CheckAnnouncement(a, now.Add(time.Second)); !errors.Is(err, plan.ErrReplayed) {
			t.Fatalf("announcement %s accepted again after it became a plan: %v", a.ID, err)
		}
	})
}

func checkAccepted(t *testing.T, a *plan.Announcement, now time.Time) {
	t.Helper()
	if err := a.Validate(); err != nil {
		t.Fatalf("accepted an invalid announcement: %v", err)
	}
	if !now.Before(a.ExpiresAt) {
		t.Fatalf("accepted an announcement expired at %s", a.ExpiresAt)
	}
	if a.IssuedAt.After(now.Add(2 * time.Minute)) {
		t.Fatalf("accepted an announcement issued in the future, at %s", a.IssuedAt)
	}
}
