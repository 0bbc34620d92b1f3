package raftnet

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"
)

// Protocol IDs served on the daemons' swarm.
const (
	rpcProtocol   protocol.ID = "/upgraded/raft/1.0.0"
	joinProtocol  protocol.ID = "/upgraded/raft-join/1.0.0"
	applyProtocol protocol.ID = "/upgraded/raft-apply/1.0.0"
)

// streamLayer carries raft's RPCs on libp2p streams. Raft addresses are peer
// ID strings; libp2p finds the peer's current network addresses.
type streamLayer struct {
	net.Listener
	h host.Host
}

func newStreamLayer(h host.Host) (*streamLayer, error) {
	l, err := gostream.Listen(h, rpcProtocol)
	if err != nil {
		return nil, fmt.Errorf("listening for raft streams: %w", err)
	}
	return &streamLayer{Listener: l, h: h}, nil
}

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, err := peer.Decode(string(address))
	if err != nil {
		return nil, fmt.Errorf("raft address %q is not a peer ID: %w", address, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := gostream.Dial(ctx, s.h, id, rpcProtocol)
	if err != nil {
		return nil, fmt.Errorf("opening raft stream to %s: %w", id, err)
	}
	return conn, nil
}
