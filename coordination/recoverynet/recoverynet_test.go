package recoverynet

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestCallAnswersAllowedAndRefusesOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, friend, stranger := newHost(t), newHost(t), newHost(t)
	s, err := Serve(Config{Host: srv, Log: zap.NewNop(),
		Allow: func(p peer.ID) bool { return p == friend.ID() },
		Handle: func(_ context.Context, from peer.ID, op string, args json.RawMessage) (any, error) {
			if op == "fail" {
				return nil, errors.New("the peer is gone")
			}
			var n int
			if err := json.Unmarshal(args, &n); err != nil {
				return nil, err
			}
			return map[string]any{"op": op, "double": 2 * n, "from": from.String()}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []host.Host{friend, stranger} {
		c.Peerstore().AddAddrs(srv.ID(), srv.Addrs(), time.Hour)
	}

	var out struct {
		Op     string
		Double int
		From   string
	}
	if err := Call(ctx, friend, srv.ID(), "double", 21, &out); err != nil {
		t.Fatal(err)
	}
	if out.Op != "double" || out.Double != 42 || out.From != friend.ID().String() {
		t.Fatalf("answer %+v", out)
	}
	var re *RemoteError
	if err := Call(ctx, friend, srv.ID(), "fail", 1, nil); !errors.As(err, &re) || re.Msg != "the peer is gone" {
		t.Fatalf("a failing op answered %v", err)
	}
	if err := Call(ctx, stranger, srv.ID(), "double", 1, &out); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a stranger was answered: %v", err)
	}
	s.Close()
	s.Close()
	if err := Call(ctx, friend, srv.ID(), "double", 1, &out); err == nil {
		t.Fatal("a closed server answered")
	}
}
