package p2p

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"go.uber.org/zap/zaptest"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, SecretSize) }

type nodeOpts struct {
	dir       string
	listen    string
	secret    []byte
	bootstrap []string
	keep      int
	quiet     func() bool
	onRecord  func() bool
	tlsFirst  bool // an older daemon's order
}

func startNode(t *testing.T, o nodeOpts) *Node {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.listen == "" {
		o.listen = "/ip4/127.0.0.1/tcp/0"
	}
	if o.secret == nil {
		o.secret = secret(1)
	}
	n, err := New(context.Background(), Config{
		IdentityFile: filepath.Join(o.dir, "identity.key"), ListenAddrs: []string{o.listen},
		Secret: o.secret, Bootstrap: o.bootstrap, Logger: zaptest.NewLogger(t),
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		AdvertiseInterval: 200 * time.Millisecond, Keep: o.keep, Quiet: o.quiet, OnRecord: o.onRecord,
		tlsFirst: o.tlsFirst,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func addrStrings(n *Node) []string {
	var s []string
	for _, a := range n.Addrs() {
		s = append(s, a.String())
	}
	return s
}

func connected(a, b *Node) bool {
	return a.Host.Network().Connectedness(b.ID()) == network.Connected
}

func TestIdentityPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "identity.key")
	k1, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Fatal("identity changed between loads")
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateIdentity(path); err == nil {
		t.Fatal("a corrupt identity was silently replaced or accepted")
	}
}

func TestDerivePSK(t *testing.T) {
	tests := []struct {
		name    string
		secret  []byte
		wantErr bool
	}{
		{"cluster secret", secret(1), false},
		{"too short", make([]byte, 16), true},
		{"empty", nil, true},
		{"hex text instead of bytes", []byte("0101010101010101010101010101010101010101010101010101010101010101"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psk, err := DerivePSK(tc.secret)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if len(psk) != 32 || bytes.Equal(psk, tc.secret) {
				t.Fatalf("psk %x must be 32 bytes and differ from the secret", psk)
			}
			again, _ := DerivePSK(tc.secret)
			other, _ := DerivePSK(secret(2))
			if !bytes.Equal(psk, again) || bytes.Equal(psk, other) {
				t.Fatal("psk must be deterministic and depend on the secret")
			}
		})
	}
}

func TestConfigRefusals(t *testing.T) {
	dir := t.TempDir()
	log := zaptest.NewLogger(t)
	base := Config{IdentityFile: filepath.Join(dir, "id"), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Secret: secret(1), Logger: log}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"no identity", func(c *Config) { c.IdentityFile = "" }},
		{"no listen address", func(c *Config) { c.ListenAddrs = nil }},
		{"short secret", func(c *Config) { c.Secret = secret(1)[:31] }},
		{"bootstrap without peer ID", func(c *Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1"} }},
		{"no logger", func(c *Config) { c.Logger = nil }},
		{"keeping one daemon", func(c *Config) { c.Keep = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.change(&cfg)
			if n, err := New(context.Background(), cfg); err == nil {
				n.Close()
				t.Fatal("accepted")
			}
		})
	}
}

func TestPubSubValidatorRejectsBadMessage(t *testing.T) {
	a := startNode(t, nodeOpts{})
	b := startNode(t, nodeOpts{bootstrap: addrStrings(a)})
	eventually(t, 10*time.Second, "b connected to a", func() bool { return connected(a, b) })

	ta, err := a.Topic("test", func(context.Context, peer.ID, []byte) pubsub.ValidationResult { return pubsub.ValidationAccept })
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var rejected []string
	tb, err := b.Topic("test", func(_ context.Context, from peer.ID, data []byte) pubsub.ValidationResult {
		if string(data) == "bad" {
			mu.Lock()
			rejected = append(rejected, from.String())
			mu.Unlock()
			return pubsub.ValidationReject
		}
		return pubsub.ValidationAccept
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a and b see each other in the topic", func() bool {
		return len(ta.Peers()) == 1 && len(tb.Peers()) == 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ta.Publish(ctx, []byte("bad")); err != nil {
		t.Fatal(err)
	}
	if err := ta.Publish(ctx, []byte("good")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-tb.Messages():
		if string(m.Data) != "good" || m.From != a.ID() {
			t.Fatalf("got %q from %s, want good from %s", m.Data, m.From, a.ID())
		}
	case <-ctx.Done():
		t.Fatal("no message delivered")
	}
	eventually(t, 5*time.Second, "b's validator rejects the bad message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(rejected) == 1 && rejected[0] == a.ID().String()
	})
	select {
	case m := <-tb.Messages():
		t.Fatalf("unexpected delivery %q", m.Data)
	default:
	}
	// The local validator applies to our own publications too.
	if err := tb.Publish(ctx, []byte("bad")); err == nil {
		t.Fatal("publishing a message our own validator rejects succeeded")
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-tb.Messages(); ok {
		t.Fatal("messages channel still open after Close")
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestDifferentSecretCannotConnect(t *testing.T) {
	a := startNode(t, nodeOpts{})
	stranger := startNode(t, nodeOpts{secret: secret(9)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stranger.Connect(ctx, addrStrings(a)); err == nil {
		t.Fatal("a host with another secret connected")
	}
	if connected(a, stranger) || connected(stranger, a) {
		t.Fatal("hosts with different secrets are connected")
	}
}

// The dialer's first choice of handshake is taken: daemons secure their
// connections with Noise, and a daemon that still offers TLS first (as those
// before Noise came first did) connects to them, either way, over TLS or
// Noise.
func TestHandshakeIsTheDialersFirstChoice(t *testing.T) {
	security := func(from, to *Node) protocol.ID {
		t.Helper()
		conns := from.Host.Network().ConnsToPeer(to.ID())
		if len(conns) == 0 {
			t.Fatalf("%s has no connection to %s", from.ID(), to.ID())
		}
		return conns[0].ConnState().Security
	}
	for _, tc := range []struct {
		name              string
		dialer, responder bool // tlsFirst
		want              protocol.ID
	}{
		{"daemons", false, false, noise.ID},
		{"older daemon dials", true, false, tls.ID},
		{"older daemon is dialed", false, true, noise.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			responder := startNode(t, nodeOpts{tlsFirst: tc.responder})
			dialer := startNode(t, nodeOpts{tlsFirst: tc.dialer})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := dialer.Connect(ctx, addrStrings(responder)); err != nil {
				t.Fatal(err)
			}
			if got := security(dialer, responder); got != tc.want {
				t.Errorf("dialer's connection secured with %s, want %s", got, tc.want)
			}
			if got := security(responder, dialer); got != tc.want {
				t.Errorf("responder's connection secured with %s, want %s", got, tc.want)
			}
		})
	}
}

// Daemons that only know a common bootstrap peer end up connected to each
// other through the address advertisements.
func TestPeersLearnEachOther(t *testing.T) {
	a := startNode(t, nodeOpts{})
	b := startNode(t, nodeOpts{bootstrap: addrStrings(a)})
	c := startNode(t, nodeOpts{bootstrap: addrStrings(a)})
	eventually(t, 15*time.Second, "b and c connected", func() bool { return connected(b, c) })
}

// A node whose addresses are on record stops its periodic advertisements
// but still advertises for a new connection, and resumes once off the
// record.
func TestNodeOnRecordAdvertisesOnlyForNewConnections(t *testing.T) {
	var onRecord atomic.Bool
	a := startNode(t, nodeOpts{onRecord: onRecord.Load})
	b := startNode(t, nodeOpts{bootstrap: addrStrings(a)})
	eventually(t, 10*time.Second, "b connected to a", func() bool { return connected(b, a) })
	eventually(t, 10*time.Second, "a advertised for b's connection", func() bool { return a.advertised.Load() > 0 })

	onRecord.Store(true)
	time.Sleep(500 * time.Millisecond) // an advertisement already on its way
	before := a.advertised.Load()
	time.Sleep(2 * time.Second) // intervals of 200ms doubling to 3.2s: several due
	if got := a.advertised.Load(); got != before {
		t.Fatalf("on record, a advertised %d times in 2s without a new connection", got-before)
	}

	c := startNode(t, nodeOpts{bootstrap: addrStrings(a)})
	eventually(t, 10*time.Second, "c connected to a", func() bool { return connected(c, a) })
	eventually(t, 5*time.Second, "a advertised for c's connection", func() bool { return a.advertised.Load() > before })
	eventually(t, 15*time.Second, "b and c connected through a's advertisement", func() bool { return connected(b, c) })

	onRecord.Store(false)
	after := a.advertised.Load()
	eventually(t, 10*time.Second, "a advertised periodically off the record", func() bool { return a.advertised.Load() > after })
}

// A bootstrap peer that restarts is reconnected without help.
func TestReconnectsAfterPeerRestart(t *testing.T) {
	dir := t.TempDir()
	a := startNode(t, nodeOpts{dir: dir})
	listen := a.Host.Addrs()[0].String()
	b := startNode(t, nodeOpts{bootstrap: addrStrings(a)})
	eventually(t, 10*time.Second, "b connected to a", func() bool { return connected(b, a) })
	id := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	eventually(t, 10*time.Second, "b notices a is gone", func() bool {
		return b.Host.Network().Connectedness(id) != network.Connected
	})
	a2 := startNode(t, nodeOpts{dir: dir, listen: listen})
	if a2.ID() != id {
		t.Fatalf("restarted node has identity %s, want %s", a2.ID(), id)
	}
	eventually(t, 10*time.Second, "b reconnected to a", func() bool { return connected(b, a2) })
}

func TestConnectReportsFailures(t *testing.T) {
	a := startNode(t, nodeOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, []string{"not a multiaddr"}); err == nil {
		t.Fatal("garbage address accepted")
	}
	b := startNode(t, nodeOpts{})
	dead := fmt.Sprintf("/ip4/127.0.0.1/tcp/1/p2p/%s", b.ID())
	if err := a.Connect(ctx, []string{dead}); err == nil {
		t.Fatal("dialing a closed port succeeded")
	}
}

// A second daemon configured with a port another daemon listens on refuses
// to start, rather than listening beside it through SO_REUSEPORT.
func TestListenPortTakenIsRefused(t *testing.T) {
	a := startNode(t, nodeOpts{})
	taken := a.Host.Addrs()[0].String()
	n, err := New(context.Background(), Config{IdentityFile: filepath.Join(t.TempDir(), "identity.key"),
		ListenAddrs: []string{taken}, Secret: secret(1), Logger: zaptest.NewLogger(t)})
	if err == nil {
		n.Close()
		t.Fatalf("a second node started on %s, where another listens", taken)
	}
	if !strings.Contains(err.Error(), "port is taken") {
		t.Fatalf("starting on a taken port: %v, want it to say the port is taken", err)
	}
	// An address of no interface here is the swarm's error, not a taken port.
	n, err = New(context.Background(), Config{IdentityFile: filepath.Join(t.TempDir(), "identity.key"),
		ListenAddrs: []string{"/ip4/192.0.2.1/tcp/4001"}, Secret: secret(1), Logger: zaptest.NewLogger(t)})
	if err == nil {
		n.Close()
		t.Fatal("a node started on an address of no interface of this host")
	}
	if strings.Contains(err.Error(), "port is taken") {
		t.Fatalf("an address of no interface reported as a taken port: %v", err)
	}
	// The first is untouched, and the port is free again once it stops.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := startNode(t, nodeOpts{listen: taken})
	if got := b.Host.Addrs()[0].String(); got != taken {
		t.Fatalf("restarted on %s, want %s", got, taken)
	}
}
