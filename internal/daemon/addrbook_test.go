package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

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
