package daemon

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
)

func newLoopbackHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func registration(h host.Host) *plan.Host {
	r := &plan.Host{ID: h.ID().String()}
	for _, a := range h.Addrs() {
		r.Addrs = append(r.Addrs, fmt.Sprintf("%s/p2p/%s", a, h.ID()))
	}
	return r
}

// A daemon whose libp2p knows no address of a host dials it once the
// addresses the host registered in the plan state are given to libp2p;
// its own registration, and addresses naming another peer, are not listed.
func TestRegisteredAddressesMakeAHostDialable(t *testing.T) {
	const proto = "/upgraded-test/addrbook"
	a, b, c := newLoopbackHost(t), newLoopbackHost(t), newLoopbackHost(t)
	b.SetStreamHandler(proto, func(s network.Stream) { _ = s.Close() })

	forged := registration(c)
	forged.Addrs = append(forged.Addrs, registration(b).Addrs...) // b's addresses under c's name
	forged.Addrs = append(forged.Addrs, "not an address")
	s := &plan.State{Hosts: map[string]*plan.Host{
		a.ID().String(): registration(a),
		b.ID().String(): registration(b),
		c.ID().String(): forged,
	}}

	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := a.NewStream(ctx, b.ID(), proto)
		if err == nil {
			_ = st.Close()
		}
		return err
	}
	if err := dial(); err == nil {
		t.Fatal("dialled a host whose address libp2p was never given; the test proves nothing")
	}

	list := registeredAddrs(s, a.ID())
	if len(list) != 2 {
		t.Fatalf("listed %d hosts, want b and c (not self): %v", len(list), list)
	}
	for _, ai := range list {
		if ai.ID == c.ID() && len(ai.Addrs) != len(c.Addrs()) {
			t.Fatalf("c listed with %d addresses, want its own %d only: %v", len(ai.Addrs), len(c.Addrs()), ai.Addrs)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		know := func(ai peer.AddrInfo) { a.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Minute) }
		keepRegisteredAddrs(ctx, func() []peer.AddrInfo { return list }, a.Peerstore(), know, time.Hour, zap.NewNop())
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(a.Peerstore().Addrs(b.ID())) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if err := dial(); err != nil {
		t.Fatalf("dialling b after its registered addresses were given: %v", err)
	}
}

// The swarm's periodic advertisements stop once the plan state records the
// daemon's current addresses, and resume when the record is of other
// addresses (the daemon now listens elsewhere).
func TestAddressesOnRecordOnceRegistered(t *testing.T) {
	node, err := p2p.New(context.Background(), p2p.Config{IdentityFile: filepath.Join(t.TempDir(), "identity.key"),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Secret: bytes.Repeat([]byte{7}, p2p.SecretSize), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	d := &Daemon{node: node, fsm: plan.NewFSM(zap.NewNop())}
	if d.addrsOnRecord() {
		t.Fatal("addresses on record in an empty plan state")
	}
	register := func(index uint64, addrs []string) {
		h := plan.Host{ID: node.ID().String(), Addrs: addrs}
		if res := d.fsm.Apply(&raft.Log{Index: index, Data: plan.Command{Op: plan.OpRegister, Host: &h}.Encode()}); res != nil {
			if err, ok := res.(error); ok {
				t.Fatalf("registering: %v", err)
			}
		}
	}
	own := d.addrs()
	slices.Reverse(own) // the order does not matter
	register(1, own)
	if !d.addrsOnRecord() {
		t.Fatalf("addresses %v not on record after registering them", own)
	}
	register(2, []string{"/ip4/127.0.0.1/tcp/1/p2p/" + node.ID().String()})
	if d.addrsOnRecord() {
		t.Fatal("addresses on record while the state holds others")
	}
}
