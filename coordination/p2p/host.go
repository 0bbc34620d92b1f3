package p2p

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	bhost "github.com/libp2p/go-libp2p/p2p/host/basic"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	connmgrimpl "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Connection manager watermarks: go-libp2p's defaults. The keeper protects
// the daemons it keeps, so trimming only ever closes on-demand connections.
const (
	connLow  = 160
	connHigh = 192
)

// newHost assembles the daemon's libp2p host from its parts: TCP, the
// private-network protector, Noise and TLS, yamux, go-libp2p's default
// resource limits and connection manager, identify and ping.
//
// Noise is offered first, against go-libp2p's default order (TLS, then
// Noise), because of memory: a TLS connection keeps its largest record's
// buffer and the parsed certificate of the other side for as long as it
// lasts, where Noise borrows its buffers for each message. Every daemon keeps
// a connection to each of the others: at N=100 (one machine, 15 s after the
// full mesh) Noise first took the median daemon from 35.4 to 33.5 MB
// resident (Go heap in use 8.3 -> 6.7 MB) and the largest from 40.2 to 37.8.
// The one who dials picks: a daemon that still offers TLS first gets TLS,
// and both kinds of daemon keep accepting both.
//
// It does not call libp2p.New: that package links every default transport
// (QUIC, WebTransport, WebRTC, websockets) and the fx container whether or
// not they are used. Leaving them out took the binary's code and tables
// (size(1) text) from 30.1 to 22.7 MB, nearly all of it resident in every
// daemon, since the kernel maps a binary's pages in 64 KB runs. A private network cannot use them anyway:
// the protector needs a raw stream, which only TCP has here. libp2p's own
// Prometheus metrics are not collected: the daemon serves its own registry.
func newHost(cfg Config, iso *isolation) (h host.Host, err error) {
	priv, err := LoadOrCreateIdentity(cfg.IdentityFile)
	if err != nil {
		return nil, err
	}
	psk, err := DerivePSK(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("starting p2p node: %w", err)
	}
	listen := make([]multiaddr.Multiaddr, 0, len(cfg.ListenAddrs))
	for _, s := range cfg.ListenAddrs {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("parsing listen address %q: %w", s, err)
		}
		listen = append(listen, a)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("deriving the peer ID: %w", err)
	}

	// Until the host exists, each part made is closed here on failure; the
	// host's Close closes them all afterwards.
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, fmt.Errorf("making the peerstore: %w", err)
	}
	closers = append(closers, ps.Close)
	if err := errors.Join(ps.AddPrivKey(id, priv), ps.AddPubKey(id, priv.GetPublic())); err != nil {
		return nil, fmt.Errorf("storing the identity: %w", err)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale()))
	if err != nil {
		return nil, fmt.Errorf("making the resource manager: %w", err)
	}
	closers = append(closers, rm.Close)
	cm, err := connmgrimpl.NewConnManager(connLow, connHigh)
	if err != nil {
		return nil, fmt.Errorf("making the connection manager: %w", err)
	}
	closers = append(closers, cm.Close)

	var gater connmgr.ConnectionGater
	swOpts := []swarm.Option{swarm.WithResourceManager(rm)}
	if iso != nil { // test hook, see IsolateFileEnv
		gater = iso
		swOpts = append(swOpts, swarm.WithConnectionGater(iso))
	}
	bus := eventbus.NewBus()
	sw, err := swarm.NewSwarm(id, ps, bus, swOpts...)
	if err != nil {
		return nil, fmt.Errorf("making the swarm: %w", err)
	}
	closers = append(closers, sw.Close)
	muxers := []tptu.StreamMuxer{{ID: yamux.ID, Muxer: yamux.DefaultTransport}}
	tlsSec, err := tls.New(tls.ID, priv, muxers)
	if err != nil {
		return nil, fmt.Errorf("making the TLS handshake: %w", err)
	}
	noiseSec, err := noise.New(noise.ID, priv, muxers)
	if err != nil {
		return nil, fmt.Errorf("making the Noise handshake: %w", err)
	}
	secure := []sec.SecureTransport{noiseSec, tlsSec}
	if cfg.tlsFirst {
		secure = []sec.SecureTransport{tlsSec, noiseSec}
	}
	up, err := tptu.New(secure, muxers, psk, rm, gater)
	if err != nil {
		return nil, fmt.Errorf("making the connection upgrader: %w", err)
	}
	tcpT, err := tcp.NewTCPTransport(up, rm, nil)
	if err != nil {
		return nil, fmt.Errorf("making the TCP transport: %w", err)
	}
	if err := sw.AddTransport(tcpT); err != nil {
		return nil, fmt.Errorf("adding the TCP transport: %w", err)
	}
	bh, err := bhost.NewHost(sw, &bhost.HostOpts{EventBus: bus, ConnManager: cm, EnablePing: true})
	if err != nil {
		return nil, fmt.Errorf("making the libp2p host: %w", err)
	}
	closers = []func() error{bh.Close} // closes the swarm, managers and peerstore
	if err := portsFree(listen); err != nil {
		return nil, err
	}
	if err := sw.Listen(listen...); err != nil {
		return nil, fmt.Errorf("starting libp2p host on %v: %w", cfg.ListenAddrs, err)
	}
	bh.Start()
	return bh, nil
}

// portsFree fails when another process listens on a TCP port of addrs.
// libp2p listens with SO_REUSEPORT (it dials from its listen port), which
// lets a second daemon configured with the same port listen beside the
// first without an error: connections then reach either at random, and
// each takes the other's address for its own. A plain listen, without
// SO_REUSEPORT, is refused while any other socket listens there.
func portsFree(addrs []multiaddr.Multiaddr) error {
	for _, a := range addrs {
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue // not a TCP address: the swarm says what is wrong with it
		}
		tcp, ok := na.(*net.TCPAddr)
		if !ok || tcp.Port == 0 {
			continue
		}
		// Any error but the port in use (an address not of this host, say)
		// is the swarm's to report.
		l, err := net.Listen("tcp", tcp.String())
		switch {
		case err == nil:
			_ = l.Close()
		case errors.Is(err, syscall.EADDRINUSE):
			return fmt.Errorf("listen address %s: its port is taken, by another daemon or program (two daemons with the same listen_multiaddress?): %w", a, err)
		}
	}
	return nil
}
