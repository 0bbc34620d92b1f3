package coordination

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/upgraded/upgraded/coordination/plan"
)

// newKey makes a key pair and returns its private key and peer ID.
func newKey(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	key, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return key, id
}

func newPeerID(t *testing.T) peer.ID {
	t.Helper()
	_, id := newKey(t)
	return id
}

// The leader holds a forwarding daemon to its own progress and host record.
func TestCheckForwardedHoldsADaemonToItsOwnWord(t *testing.T) {
	me, other := newPeerID(t), newPeerID(t)
	progress := func(host peer.ID) []byte {
		return plan.Command{Op: plan.OpProgress, PlanID: "p", HostID: host.String(), Progress: &plan.HostProgress{Step: plan.StepPrepared}}.Encode()
	}
	register := func(host peer.ID) []byte {
		return plan.Command{Op: plan.OpRegister, Host: &plan.Host{ID: host.String()}}.Encode()
	}
	for _, c := range []struct {
		name string
		cmd  []byte
		ok   bool
	}{
		{"own progress", progress(me), true},
		{"another host's progress", progress(other), false},
		{"own host record", register(me), true},
		{"another daemon's host record", register(other), false},
		{"host record without a host", plan.Command{Op: plan.OpRegister}.Encode(), false},
		{"operator's pause", plan.Command{Op: plan.OpPause, PlanID: "p"}.Encode(), true},
		{"not a command", []byte("{"), false},
	} {
		err := checkForwarded(me, c.cmd)
		if (err == nil) != c.ok {
			t.Errorf("%s: check gave %v, want accepted=%v", c.name, err, c.ok)
		}
	}
}
