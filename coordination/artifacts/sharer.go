package artifacts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// Config configures a Sharer.
type Config struct {
	Host  host.Host
	Store *Store // the index the daemon's Server serves from
	// SeederTimeout is how long a host waits for each host before it in the
	// artifact's Order to start fetching from the source, and how long one
	// that was fetching may then stay silent, before the next one takes
	// over. Default 30s.
	SeederTimeout time.Duration
	// MaxWait bounds the whole wait for peers: past it the host fetches from
	// the source itself, as a last resort. Default 3m.
	MaxWait time.Duration
	// Fanout is how many hosts wait on each host of the artifact's tree
	// (see FetchArtifact). Default 4, the server's default MaxUploads.
	Fanout int
	// ParentWait bounds the wait on the host's parent in the tree before it
	// asks around. Default 20s; at most SeederTimeout.
	ParentWait time.Duration
	// RetryInterval is the first pause between two rounds of asking the
	// peers; each pause doubles, up to MaxRetryInterval. Defaults 500ms, 4s.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// Spread is how many peers a round asks beside the host expected to
	// fetch from the source (a window that moves from round to round), so
	// that a round costs the same whatever the number of hosts. Default 8.
	Spread int
	// RequestTimeout bounds reaching one peer and reading its answer. Default 10s.
	RequestTimeout time.Duration
	// IdleTimeout cuts a transfer that made no progress for this long. Default 30s.
	IdleTimeout time.Duration
	// MaxSize is the largest artifact accepted. Default stage.DefaultMaxSize.
	MaxSize      int64
	StageOptions []stage.Option // for fetches from the source
	Observer     Observer       // nil: not counted
	Log          *zap.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.SeederTimeout, 30*time.Second)
	def(&c.MaxWait, 3*time.Minute)
	def(&c.RetryInterval, 500*time.Millisecond)
	def(&c.MaxRetryInterval, 4*time.Second)
	c.MaxRetryInterval = max(c.MaxRetryInterval, c.RetryInterval)
	def(&c.ParentWait, 20*time.Second)
	c.ParentWait = min(c.ParentWait, c.SeederTimeout)
	if c.Fanout <= 0 {
		c.Fanout = 4
	}
	def(&c.RequestTimeout, 10*time.Second)
	def(&c.IdleTimeout, 30*time.Second)
	if c.MaxSize <= 0 {
		c.MaxSize = stage.DefaultMaxSize
	}
	if c.Spread <= 0 {
		c.Spread = 8
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	}
}

// Sharer fetches a plan's artifacts so that, per artifact, one host fetches
// it from the source and the others from their peers.
type Sharer struct {
	cfg Config
	log *zap.Logger
}

// New validates cfg and returns a Sharer.
func New(cfg Config) (*Sharer, error) {
	if cfg.Host == nil || cfg.Store == nil || cfg.Log == nil {
		return nil, errors.New("artifact sharing: host, store and logger are required")
	}
	cfg.setDefaults()
	return &Sharer{cfg: cfg, log: cfg.Log.Named("artifacts")}, nil
}

// FetchArtifact brings artifact a of plan p into dir, its sha256 checked, and
// returns its path (dir/<base name of the source>, as stage.Fetch names it).
//
// Local sources (a path or file:// URL) are read by every host from its own
// disk, as before: nothing crosses the network, so there is nothing to share.
// For http(s) and /ipfs/ sources the hosts of the plan take the artifact's
// Order: the first fetches from the source. The others form a tree over the
// Order, Fanout children per host: each asks its parent to serve the
// artifact as soon as the parent holds it (request.WaitMS), so that the
// copies flow down the tree with one request per host. A host whose parent
// is down, refuses, or has nothing within ParentWait asks its peers in
// rounds (any that holds a verified copy), the pause between rounds
// doubling up to MaxRetryInterval, until one serves it; it takes over the
// source fetch itself only when every host before it in the Order refused,
// failed, sent wrong bytes, or stayed silent or unreachable past its turn;
// past MaxWait it fetches from the source as a last resort.
func (s *Sharer) FetchArtifact(ctx context.Context, p *plan.Plan, a plan.Artifact, dir string) (string, error) {
	sha := key(a.SHA256)
	if err := checkSHA(sha); err != nil {
		return "", fmt.Errorf("fetching %s: %w", a.Source, err)
	}
	log := s.log.With(zap.String("plan", p.ID), zap.String("sha256", sha), zap.String("source", a.Source))
	if stage.IsLocal(a.Source) {
		return s.fromSource(ctx, log, a, dir, "local", "a local source is read by every host from its own disk")
	}
	name, err := stage.TargetName(a.Source)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", a.Source, err)
	}
	order := Order(sha, p.HostIDs())
	w := newWaiting(order, s.cfg.Host.ID().String(), time.Now(), s.cfg.SeederTimeout)
	if w.rank < 0 {
		return s.fromSource(ctx, log, a, dir, "source", "this host is not among the plan's hosts")
	}
	final := filepath.Join(dir, name)
	defer s.cfg.Store.beginWant(sha)()
	if why, ok := w.takeOver(time.Now()); ok {
		// The seeder, at once, without first asking whether a peer holds
		// it: the others hear it fetching from its first moment, and a
		// round of asks on a loaded swarm (each up to RequestTimeout) kept a
		// seeder of 100 hosts silent past its turn.
		return s.fromSource(ctx, log, a, dir, "source", why)
	}
	ok, err := s.fromParent(ctx, log, order[(w.rank-1)/s.cfg.Fanout], w, sha, final)
	if err != nil {
		return "", err
	}
	if ok {
		return final, nil
	}
	pause := s.cfg.RetryInterval
	for round := 0; ; round++ {
		ok, err := s.askPeers(ctx, log, w.toAsk(round, s.cfg.Spread, time.Now()), w, sha, final, 0)
		if err != nil {
			return "", err
		}
		if ok {
			return final, nil
		}
		if why, ok := w.takeOver(time.Now()); ok {
			return s.fromSource(ctx, log, a, dir, "source", why)
		}
		if time.Since(w.start) >= s.cfg.MaxWait {
			break
		}
		if err := sleep(ctx, pause); err != nil {
			return "", fmt.Errorf("waiting for a peer to serve %s: %w", a.Source, err)
		}
		pause = min(2*pause, s.cfg.MaxRetryInterval)
	}
	return s.fromSource(ctx, log, a, dir, "source",
		fmt.Sprintf("last resort: no peer served it within %s", s.cfg.MaxWait))
}

// fromParent waits on the host's parent in the artifact's tree, asking it
// again while it is up and has nothing yet (a parent that is not fetching
// the artifact holds a request only briefly: it may not have started), for
// at most ParentWait in all. It returns an error only when ctx ended.
func (s *Sharer) fromParent(ctx context.Context, log *zap.Logger, parent string, w *waiting, sha, final string) (bool, error) {
	end := time.Now().Add(s.cfg.ParentWait)
	for {
		asked := time.Now()
		left := end.Sub(asked)
		if left < 100*time.Millisecond {
			return false, nil
		}
		ok, err := s.askPeers(ctx, log, []string{parent}, w, sha, final, left)
		if err != nil || ok {
			return ok, err
		}
		if o := w.last[parent]; o != outcomeWait && o != outcomeFetching {
			return false, nil // down, refused, failed, busy or sent wrong bytes: ask around
		}
		// A daemon that predates waiting requests answers at once: ask it
		// no faster than a round of asking around would.
		if err := sleep(ctx, s.cfg.RetryInterval-time.Since(asked)); err != nil {
			return false, fmt.Errorf("waiting for %s to serve artifact sha256 %s: %w", short(parent), sha, err)
		}
	}
}

// askPeers asks the peers of one round in turn and stops at the first
// verified copy, each asked to wait up to wait for it. It returns an error
// only when ctx ended.
func (s *Sharer) askPeers(ctx context.Context, log *zap.Logger, ids []string, w *waiting, sha, final string, wait time.Duration) (bool, error) {
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("fetching artifact sha256 %s from peers: %w", sha, err)
		}
		pid, err := peer.Decode(id)
		if err != nil {
			w.note(id, outcomeGone, time.Now())
			continue
		}
		n, err := download(ctx, s.cfg.Host, pid, sha, final, s.cfg.MaxSize, s.cfg.RequestTimeout, s.cfg.IdleTimeout, wait)
		out := classify(err)
		w.note(id, out, time.Now())
		switch out {
		case outcomeGot:
			s.cfg.Observer.ArtifactFetched("peer", n)
			if err := s.cfg.Store.add(sha, final); err != nil {
				return false, err
			}
			log.Info("artifact fetched from peer", zap.String("peer", id), zap.Int64("bytes", n))
			return true, nil
		case outcomeBad:
			if ctx.Err() != nil {
				return false, fmt.Errorf("fetching artifact sha256 %s from %s: %w", sha, id, ctx.Err())
			}
			log.Warn("rejected a peer's copy of the artifact; asking another", zap.String("peer", id), zap.Error(err))
		case outcomeGone, outcomeUnreachable:
			log.Debug("peer cannot serve the artifact", zap.String("peer", id), zap.Error(err))
		}
	}
	return false, nil
}

// fromSource fetches the artifact from its source with stage.Fetch, and says
// so, with why this host did it.
func (s *Sharer) fromSource(ctx context.Context, log *zap.Logger, a plan.Artifact, dir, from, why string) (string, error) {
	sha := key(a.SHA256)
	end := s.cfg.Store.beginSource(sha)
	path, err := stage.Fetch(ctx, stage.Artifact{Source: a.Source, SHA256: a.SHA256}, dir, s.cfg.StageOptions...)
	end(err)
	if err != nil {
		log.Warn("fetching the artifact from its source failed", zap.String("why", why), zap.Error(err))
		return "", err
	}
	var n int64
	if fi, err := os.Stat(path); err == nil {
		n = fi.Size()
	}
	s.cfg.Observer.ArtifactFetched(from, n)
	if err := s.cfg.Store.add(sha, path); err != nil {
		return "", err
	}
	log.Info("artifact fetched from source", zap.String("why", why), zap.Int64("bytes", n))
	return path, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
