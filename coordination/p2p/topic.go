package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Validator decides whether a gossiped message is accepted and relayed.
// from is the message's original author (gossipsub signs every message, so it
// cannot be forged), not the peer that relayed it. Return ValidationReject for
// forged or malformed messages (the relaying peer is penalised) and
// ValidationIgnore for valid but unwanted ones (duplicates, stale).
// It runs for messages this node publishes too, and must not block long.
type Validator func(ctx context.Context, from peer.ID, data []byte) pubsub.ValidationResult

// Message is a gossiped message that passed the topic's validator.
type Message struct {
	From peer.ID
	Data []byte
}

// messageBuffer absorbs bursts while the consumer is busy; beyond it, reading
// from gossipsub waits, and gossipsub drops for this subscriber only.
const messageBuffer = 64

// Topic is a joined gossipsub topic.
type Topic struct {
	node   *Node
	name   string
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	msgs   chan Message
	cancel context.CancelFunc
	done   chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Topic joins the named topic; every message, including this node's own, is
// checked by v before it is relayed or delivered on Messages. A name can be
// joined once per node at a time.
func (n *Node) Topic(name string, v Validator) (*Topic, error) {
	if v == nil {
		return nil, fmt.Errorf("joining topic %s: a validator is required", name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("joining topic %s: node is closed", name)
	}
	t, err := n.join(name, v)
	if err != nil {
		return nil, err
	}
	n.topics[t] = struct{}{}
	return t, nil
}

func (n *Node) join(name string, v Validator) (*Topic, error) {
	wrapped := func(ctx context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		return v(ctx, m.GetFrom(), m.Data)
	}
	if err := n.PubSub.RegisterTopicValidator(name, pubsub.ValidatorEx(wrapped)); err != nil {
		return nil, fmt.Errorf("joining topic %s: registering validator: %w", name, err)
	}
	pt, err := n.PubSub.Join(name)
	if err != nil {
		n.PubSub.UnregisterTopicValidator(name)
		return nil, fmt.Errorf("joining topic %s: %w", name, err)
	}
	sub, err := pt.Subscribe()
	if err != nil {
		pt.Close()
		n.PubSub.UnregisterTopicValidator(name)
		return nil, fmt.Errorf("subscribing to topic %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Topic{node: n, name: name, topic: pt, sub: sub, msgs: make(chan Message, messageBuffer),
		cancel: cancel, done: make(chan struct{})}
	go t.read(ctx)
	return t, nil
}

// read moves accepted messages to msgs until Close; it closes msgs on exit.
func (t *Topic) read(ctx context.Context) {
	defer close(t.done)
	defer close(t.msgs)
	for {
		m, err := t.sub.Next(ctx)
		if err != nil {
			return
		}
		select {
		case t.msgs <- Message{From: m.GetFrom(), Data: m.Data}:
		case <-ctx.Done():
			return
		}
	}
}

// Publish gossips data to the topic's subscribers.
func (t *Topic) Publish(ctx context.Context, data []byte) error {
	if err := t.topic.Publish(ctx, data); err != nil {
		return fmt.Errorf("publishing on topic %s: %w", t.name, err)
	}
	return nil
}

// Peers lists the connected peers known to have joined this topic.
func (t *Topic) Peers() []peer.ID { return t.topic.ListPeers() }

// Messages delivers accepted messages, this node's own included. It is
// closed when the topic or the node is closed.
func (t *Topic) Messages() <-chan Message { return t.msgs }

// Close leaves the topic. It is safe to call more than once.
func (t *Topic) Close() error {
	t.closeOnce.Do(func() {
		t.sub.Cancel()
		t.cancel()
		<-t.done
		err := t.topic.Close()
		verr := t.node.PubSub.UnregisterTopicValidator(t.name)
		if err != nil || verr != nil {
			t.closeErr = fmt.Errorf("leaving topic %s: %w", t.name, errors.Join(err, verr))
		}
		t.node.mu.Lock()
		delete(t.node.topics, t)
		t.node.mu.Unlock()
	})
	return t.closeErr
}
