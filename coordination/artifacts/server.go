package artifacts

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// Observer counts artifact bytes for the daemon's metrics
// (internal/metrics.Metrics implements it).
type Observer interface {
	// ArtifactFetched counts n bytes staged from "source", "peer" or "local".
	ArtifactFetched(from string, n int64)
	// ArtifactServed counts n bytes served to another daemon.
	ArtifactServed(n int64)
	// ArtifactAnswered counts one request answered, by the answer's code
	// ("ok", "not_held", "fetching", "busy", ...).
	ArtifactAnswered(code string)
}

type noObserver struct{}

func (noObserver) ArtifactFetched(string, int64) {}
func (noObserver) ArtifactServed(int64)          {}
func (noObserver) ArtifactAnswered(string)       {}

// ServerConfig configures a Server.
type ServerConfig struct {
	Host  host.Host
	Store *Store
	// Allow says whether a daemon may be served (nil: any daemon of the
	// private swarm, which already keeps out whoever lacks the cluster secret).
	Allow func(peer.ID) bool
	// MaxUploads bounds the copies served at once; a request beyond it is
	// answered busy and the asker tries another daemon. Default 4.
	MaxUploads int
	// MaxSize is the largest artifact served. Default stage.DefaultMaxSize.
	MaxSize int64
	// RequestTimeout bounds reading a request. Default 10s.
	RequestTimeout time.Duration
	// IdleTimeout cuts an upload that made no progress for this long. Default 30s.
	IdleTimeout time.Duration
	// MaxHold bounds how long a request that asks to wait for the artifact
	// (request.WaitMS) is held. Default 30s.
	MaxHold time.Duration
	// UnwantedHold bounds that wait when this daemon is not fetching the
	// artifact itself (it may start soon, or never: its version installed
	// already). Default 3s.
	UnwantedHold time.Duration
	// MaxHeld bounds the requests held at once; beyond it a request is
	// answered at once. Default 64.
	MaxHeld  int
	Observer Observer // nil: not counted
	Log      *zap.Logger
}

func (c *ServerConfig) setDefaults() {
	if c.MaxUploads <= 0 {
		c.MaxUploads = 4
	}
	if c.MaxSize <= 0 {
		c.MaxSize = stage.DefaultMaxSize
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.MaxHold <= 0 {
		c.MaxHold = 30 * time.Second
	}
	if c.UnwantedHold <= 0 {
		c.UnwantedHold = 3 * time.Second
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = 64
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
}

// Server serves the artifacts of a Store on Protocol until Close.
type Server struct {
	cfg   ServerConfig
	log   *zap.Logger
	slots chan struct{}
	held  chan struct{} // requests held waiting for their artifact

	svc *p2p.Service
}

// Serve registers the protocol handler on cfg.Host.
func Serve(cfg ServerConfig) (*Server, error) {
	if cfg.Host == nil || cfg.Store == nil || cfg.Log == nil {
		return nil, errors.New("artifact protocol: host, store and logger are required")
	}
	cfg.setDefaults()
	s := &Server{cfg: cfg, log: cfg.Log.Named("artifacts"), slots: make(chan struct{}, cfg.MaxUploads),
		held: make(chan struct{}, cfg.MaxHeld)}
	s.svc = p2p.ServeProtocol(cfg.Host, Protocol, s.handle)
	return s, nil
}

// Close stops serving, cuts the uploads under way and waits for them; safe twice.
func (s *Server) Close() { s.svc.Close() }

// handle answers one request; ctx ends at Close, which cuts the upload.
func (s *Server) handle(ctx context.Context, st network.Stream) {
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	from := st.Conn().RemotePeer()
	_ = st.SetDeadline(time.Now().Add(s.cfg.RequestTimeout))
	var req request
	if err := readLine(bufio.NewReaderSize(st, maxHeader), &req); err != nil {
		s.answer(st, header{Code: codeBadRequest, Error: "reading the request: " + err.Error()})
		return
	}
	if s.cfg.Allow != nil && !s.cfg.Allow(from) {
		s.log.Warn("refused an artifact request from a daemon that is not of this cluster", zap.Stringer("from", from))
		s.answer(st, header{Code: codeRefused, Error: from.String() + " is not a daemon of this cluster"})
		return
	}
	if err := checkSHA(req.SHA256); err != nil {
		s.answer(st, header{Code: codeBadRequest, Error: err.Error()})
		return
	}
	if req.WaitMS > 0 {
		s.hold(ctx, key(req.SHA256), time.Duration(req.WaitMS)*time.Millisecond)
	}
	s.serve(st, from, key(req.SHA256))
}

// hold returns once the artifact is held here or this daemon's fetch of it
// failed, or once wait (at most MaxHold; UnwantedHold while this daemon is
// not fetching it) passed, or at Close.
func (s *Server) hold(ctx context.Context, sha string, wait time.Duration) {
	select {
	case s.held <- struct{}{}:
		defer func() { <-s.held }()
	default:
		return // as many held as allowed: answered at once
	}
	start := time.Now()
	wait = min(wait, s.cfg.MaxHold)
	for {
		changed := s.cfg.Store.watch()
		if stt, _ := s.cfg.Store.status(sha); stt == statusHeld || stt == statusFailed {
			return
		}
		limit := wait
		if !s.cfg.Store.isWanted(sha) {
			limit = min(wait, s.cfg.UnwantedHold)
		}
		left := limit - time.Since(start)
		if left <= 0 {
			return
		}
		select { // woken by a change, which is rare: a timer per wake costs nothing
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(left):
		}
	}
}

// serve answers for one artifact: its bytes when held and a slot is free,
// else what this daemon knows of it.
func (s *Server) serve(st network.Stream, from peer.ID, sha string) {
	switch stt, why := s.cfg.Store.status(sha); stt {
	case statusNotHeld:
		s.answer(st, header{Code: codeNotHeld, Error: "artifact sha256 " + sha + " is not held by this daemon"})
		return
	case statusFetching:
		s.answer(st, header{Code: codeFetching})
		return
	case statusFailed:
		s.answer(st, header{Code: codeFailed, Error: why})
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.answer(st, header{Code: codeBusy})
		return
	}
	f, size, err := s.cfg.Store.open(sha)
	if err != nil {
		s.log.Warn("a held artifact cannot be served any more", zap.String("sha256", sha), zap.Error(err))
		s.answer(st, header{Code: codeNotHeld, Error: "artifact sha256 " + sha + " is not held by this daemon"})
		return
	}
	defer f.Close()
	if size > s.cfg.MaxSize {
		s.answer(st, header{Code: codeNotHeld, Error: fmt.Sprintf("artifact is %d bytes, over the serving limit of %d", size, s.cfg.MaxSize)})
		return
	}
	w := idleWriter{s: st, idle: s.cfg.IdleTimeout}
	s.cfg.Observer.ArtifactAnswered(codeOK)
	if err := writeLine(w, header{Code: codeOK, Size: size}); err != nil {
		_ = st.Reset()
		return
	}
	n, err := io.CopyN(w, f, size)
	s.cfg.Observer.ArtifactServed(n)
	if err != nil {
		_ = st.Reset()
		s.log.Warn("serving an artifact to a daemon was cut short", zap.String("sha256", sha), zap.Stringer("to", from),
			zap.Int64("bytes", n), zap.Int64("size", size), zap.Error(err))
		return
	}
	_ = st.Close()
	s.log.Info("served an artifact to a daemon", zap.String("sha256", sha), zap.Stringer("to", from), zap.Int64("bytes", n))
}

func (s *Server) answer(st network.Stream, h header) {
	s.cfg.Observer.ArtifactAnswered(h.Code)
	if err := writeLine(idleWriter{s: st, idle: s.cfg.IdleTimeout}, h); err != nil {
		_ = st.Reset()
		return
	}
	_ = st.Close()
}

// checkSHA accepts exactly 64 hex digits.
func checkSHA(s string) error {
	if len(s) != 64 {
		return fmt.Errorf("sha256 must be 64 hex digits, got %d characters", len(s))
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return fmt.Errorf("sha256 %q is not hex", s)
		}
	}
	return nil
}
