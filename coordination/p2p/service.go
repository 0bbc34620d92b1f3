package p2p

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Service serves one stream protocol until Close. Handlers run under a
// context that ends at Close; Close removes the handler, ends that context
// and waits for the handlers under way. A stream that arrives after Close is
// reset.
type Service struct {
	host   host.Host
	proto  protocol.ID
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

// ServeProtocol registers handle for proto on h.
func ServeProtocol(h host.Host, proto protocol.ID, handle func(ctx context.Context, st network.Stream)) *Service {
	s := &Service{host: h, proto: proto}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	h.SetStreamHandler(proto, func(st network.Stream) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = st.Reset()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		handle(s.ctx, st)
	})
	return s
}

// Close stops serving and waits for the handlers under way; safe twice.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.host.RemoveStreamHandler(s.proto)
	s.cancel()
	s.wg.Wait()
}
