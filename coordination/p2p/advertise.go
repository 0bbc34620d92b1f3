package p2p

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// peersTopic carries each daemon's own listen addresses. Daemons usually know
// only a bootstrap peer or two; raft must reach every member by peer ID and
// a gossipsub mesh is healthier with more links, so each daemon tells the
// others where it listens; every daemon records all of them and keeps a
// bounded set connected (see keeper).
// Gossipsub signs messages, so a daemon can only speak for itself.
const peersTopic = "/upgraded/peers/1.0.0"

type advertisement struct {
	Addrs []string `json:"addrs"`
}

func (n *Node) startAdvertising(ctx context.Context) error {
	t, err := n.Topic(peersTopic, n.validateAdvertisement)
	if err != nil {
		return fmt.Errorf("joining the peer address topic: %w", err)
	}
	newPeer := make(chan struct{}, 1)
	n.Host.Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
		select {
		case newPeer <- struct{}{}:
		default:
		}
	}})
	n.goRun(func() { n.advertise(ctx, t, newPeer) })
	n.goRun(func() { n.learn(ctx, t) })
	return nil
}

// advertise publishes this node's addresses periodically and soon after a
// new connection, so a newcomer learns about everyone quickly.
func (n *Node) advertise(ctx context.Context, t *Topic, newPeer <-chan struct{}) {
	tick := time.NewTicker(n.cfg.AdvertiseInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-newPeer:
			// Give the new peer's gossipsub a moment to see our subscription.
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return
			}
		}
		addrs := make([]string, 0)
		for _, a := range n.Host.Addrs() {
			addrs = append(addrs, a.String())
		}
		b, _ := json.Marshal(advertisement{Addrs: addrs})
		if err := t.Publish(ctx, b); err != nil && ctx.Err() == nil {
			n.log.Debug("advertising addresses", zap.Error(err))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// learn records every advertising daemon for the keeper.
func (n *Node) learn(ctx context.Context, t *Topic) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-t.Messages():
			if !ok {
				return
			}
			if m.From == n.ID() {
				continue
			}
			ai, err := decodeAdvertisement(m.From, m.Data)
			if err != nil {
				continue
			}
			n.keep.add(ai, false)
		}
	}
}

func (n *Node) validateAdvertisement(_ context.Context, from peer.ID, data []byte) pubsub.ValidationResult {
	if _, err := decodeAdvertisement(from, data); err != nil {
		n.log.Debug("refusing peer address advertisement", zap.Stringer("from", from), zap.Error(err))
		return pubsub.ValidationReject
	}
	return pubsub.ValidationAccept
}

func decodeAdvertisement(from peer.ID, data []byte) (peer.AddrInfo, error) {
	var a advertisement
	if err := json.Unmarshal(data, &a); err != nil {
		return peer.AddrInfo{}, fmt.Errorf("decoding addresses: %w", err)
	}
	if len(a.Addrs) == 0 || len(a.Addrs) > 64 {
		return peer.AddrInfo{}, fmt.Errorf("%d addresses advertised", len(a.Addrs))
	}
	ai := peer.AddrInfo{ID: from}
	for _, s := range a.Addrs {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return peer.AddrInfo{}, fmt.Errorf("parsing address %q: %w", s, err)
		}
		ai.Addrs = append(ai.Addrs, ma)
	}
	return ai, nil
}
