package raftnet

import "github.com/libp2p/go-libp2p/core/protocol"

// Protocol IDs served on the daemons' swarm. The raft protocol's 2.0.0 is
// streamTransport's wire format; 1.0.0 was hashicorp/raft's NetworkTransport.
const (
	rpcProtocol   protocol.ID = "/upgraded/raft/2.0.0"
	joinProtocol  protocol.ID = "/upgraded/raft-join/1.0.0"
	applyProtocol protocol.ID = "/upgraded/raft-apply/1.0.0"
)
