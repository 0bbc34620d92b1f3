package clustersim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DaemonOptions configure one `ipfs-cluster-service daemon` run.
type DaemonOptions struct {
	Dir       string
	Profile   Profile
	Fault     string
	Bootstrap []string
	Upgrade   bool
	// LoadDelay is how long the pinset reads empty after start (crdt), or
	// after a raft majority is reachable ("leader elected").
	LoadDelay time.Duration
	// StopDelay is the pause before a clean shutdown finishes.
	StopDelay time.Duration
	Log       *zap.Logger
}

// daemon is one running peer.
type daemon struct {
	opts      DaemonOptions
	log       *zap.Logger
	cfg       *ServiceConfig
	id        Identity
	listen    Addr
	consensus string
	state     *pinState
	peers     *peerBook
	client    *http.Client
	advMu     sync.Mutex
	adv       *advert // cached for sync answers
	loaded    atomic.Bool
	ready     chan struct{} // closed once loaded
	// rest and cluster listeners, known once started.
	restAddr, clusterAddr string
}

// RunDaemon runs a peer until ctx is cancelled (a clean shutdown: state
// persisted, cluster.lock removed) or it fails.
func RunDaemon(ctx context.Context, o DaemonOptions) error {
	d, lock, err := newDaemon(o)
	if err != nil {
		return err
	}
	defer lock.release()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	servers, err := d.startServers(runCtx, &wg)
	if err != nil {
		d.state.store.Close()
		return err
	}
	if d.opts.Fault == FaultFailStart {
		return d.failStart(ctx, servers, stop, &wg)
	}
	wg.Add(2)
	go func() { defer wg.Done(); d.syncLoop(runCtx) }()
	go func() { defer wg.Done(); d.loadLoop(runCtx) }()
	if len(o.Bootstrap) > 0 && d.consensus == ConsensusRaft {
		wg.Add(1)
		go func() { defer wg.Done(); d.joinLoop(runCtx) }()
	}
	<-ctx.Done()
	d.log.Info("shutting down IPFS Cluster")
	waitFor(context.Background(), o.StopDelay)
	stop()
	shutdownServers(servers)
	wg.Wait()
	if err := d.state.store.Close(); err != nil {
		d.log.Error("persisting state at shutdown", zap.Error(err))
		return fmt.Errorf("persisting state at shutdown: %w", err)
	}
	d.log.Info("IPFS Cluster is shut down", zap.String("peer", d.id.ID))
	return nil
}

// failStart reproduces a peer whose API answered briefly and then died.
func (d *daemon) failStart(ctx context.Context, servers []*http.Server, stop func(), wg *sync.WaitGroup) error {
	waitFor(ctx, 200*time.Millisecond)
	stop()
	shutdownServers(servers)
	wg.Wait()
	d.state.store.Close()
	err := errors.New("error starting cluster: loading datastore: MANIFEST-000001: checksum mismatch (clustersim fault fail-start)")
	d.log.Error(err.Error())
	return err
}

func waitFor(ctx context.Context, dur time.Duration) {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func shutdownServers(servers []*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
}

func newDaemon(o DaemonOptions) (*daemon, *folderLock, error) {
	cfg, err := LoadServiceConfig(o.Dir)
	if err != nil {
		return nil, nil, err
	}
	id, err := LoadIdentity(o.Dir)
	if err != nil {
		return nil, nil, err
	}
	listen, err := ParseAddr(cfg.Cluster.ListenMultiaddress[0])
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.listen_multiaddress: %w", err)
	}
	lock, err := acquireLock(o.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("acquiring lock: %w. Is another peer running from this folder?", err)
	}
	d := &daemon{
		opts: o, log: o.Log, cfg: cfg, id: id, listen: listen, consensus: cfg.ConsensusName(),
		peers:  newPeerBook(id.ID),
		ready:  make(chan struct{}),
		client: &http.Client{Timeout: 3 * time.Second},
	}
	if err := d.openState(); err != nil {
		lock.release()
		return nil, nil, err
	}
	return d, lock, nil
}

// openState loads the pinset of the configured consensus, moving and
// migrating folders as the real release does on start.
func (d *daemon) openState() error {
	for _, ma := range d.cfg.Cluster.PeerAddresses {
		d.peers.learn(ma)
	}
	for _, ma := range readPeerstore(d.opts.Dir) {
		d.peers.learn(ma)
	}
	for _, ma := range d.opts.Bootstrap {
		d.peers.learn(ma)
	}
	if d.opts.Upgrade && d.opts.Profile.StateUpgrade {
		d.log.Info("upgrading state before start: nothing to upgrade")
	}
	if d.consensus == ConsensusCRDT {
		store, ls, err := openCRDTStore(d.opts.Dir, d.opts.Profile, d.log)
		if err != nil {
			return err
		}
		d.state = newPinState(ls, store)
		return nil
	}
	return d.openRaft()
}

func (d *daemon) openRaft() error {
	rc := d.cfg.Consensus.Raft
	if len(d.opts.Bootstrap) > 0 {
		moved, err := rotateRaftFolder(d.opts.Dir, rc.BackupsRotate)
		if err != nil {
			return err
		}
		if moved != "" {
			d.log.Info("the raft folder was moved aside before bootstrapping", zap.String("backup", moved))
		}
	}
	store, ls, err := openRaftStore(filepath.Join(d.opts.Dir, "raft"), rc.SnapshotThreshold, d.log.Named("raft"))
	if err != nil {
		return err
	}
	d.state = newPinState(ls, store)
	if ls.Membership != nil || len(d.opts.Bootstrap) > 0 {
		return nil
	}
	// First start: the membership forms from init_peerset.
	members := map[string]string{d.id.ID: d.listen.WithPeer(d.id.ID)}
	for _, pid := range rc.InitPeerset {
		if _, ok := members[pid]; ok {
			continue
		}
		members[pid] = ""
		if a, ok := d.peers.addrOf(pid); ok {
			members[pid] = a.WithPeer(pid)
		}
	}
	if err := d.state.initMembership(members); err != nil {
		return fmt.Errorf("recording the initial raft peerset: %w", err)
	}
	return nil
}

// openCRDTStore opens the release's datastore folder. A >= 1.0 release that
// finds only a badger/ folder migrates it into pebble/; a < 1.0 release
// does not know pebble/ and starts from an empty badger/.
func openCRDTStore(dir string, p Profile, log *zap.Logger) (*fileStore, loadedState, error) {
	target := filepath.Join(dir, p.DatastoreDir)
	badger := filepath.Join(dir, "badger")
	if p.DatastoreDir == "pebble" && !exists(target) && exists(badger) {
		ls, err := readFileStore(badger)
		if err != nil {
			return nil, ls, fmt.Errorf("reading the badger datastore to migrate: %w", err)
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, ls, fmt.Errorf("creating pebble datastore: %w", err)
		}
		if err := writeFileSnapshot(target, ls); err != nil {
			return nil, ls, fmt.Errorf("migrating datastore: %w", err)
		}
		if err := os.RemoveAll(badger); err != nil {
			return nil, ls, fmt.Errorf("removing migrated badger datastore: %w", err)
		}
		log.Info("migrated the crdt datastore from badger to pebble; badger folder removed",
			zap.Int("pins", len(liveOf(reduce(ls.Entries)))))
	}
	return openFileStore(target)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readPeerstore(dir string) []string {
	f, err := os.Open(filepath.Join(dir, "peerstore"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// listen starts the cluster (peer-to-peer) and REST listeners.
func (d *daemon) startServers(ctx context.Context, wg *sync.WaitGroup) ([]*http.Server, error) {
	restMA := d.cfg.API.RestAPI.HTTPListenMultiaddress
	restA, err := ParseAddr(restMA)
	if err != nil {
		return nil, fmt.Errorf("api.restapi.http_listen_multiaddress: %w", err)
	}
	cl, err := net.Listen("tcp", d.listen.HostPort())
	if err != nil {
		return nil, fmt.Errorf("listening on cluster address %s: %w", d.listen.Multiaddr(), err)
	}
	rl, err := net.Listen("tcp", restA.HostPort())
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("listening on REST API address %s: %w", restMA, err)
	}
	d.restAddr, d.clusterAddr = rl.Addr().String(), cl.Addr().String()
	servers := []*http.Server{
		{Handler: d.clusterHandler(), ReadHeaderTimeout: 5 * time.Second},
		{Handler: d.restHandler(), ReadHeaderTimeout: 5 * time.Second},
	}
	for i, l := range []net.Listener{cl, rl} {
		srv, l := servers[i], l
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("API server stopped", zap.Error(err))
			}
		}()
	}
	d.log.Info(fmt.Sprintf("IPFS Cluster v%s listening on:\n        %s\n", d.opts.Profile.Version, d.listen.WithPeer(d.id.ID)))
	d.log.Named("restapi").Info("REST API (HTTP): " + restMA)
	return servers, nil
}

// loadLoop makes the pinset readable: crdt after LoadDelay; raft once a
// majority of the membership answers, plus LoadDelay.
func (d *daemon) loadLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for d.consensus == ConsensusRaft && !d.raftMajority() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	if d.consensus == ConsensusRaft {
		d.log.Named("raft").Info("Current Raft Leader elected: majority of the peerset is reachable")
	}
	waitFor(ctx, d.opts.LoadDelay)
	if ctx.Err() != nil {
		return
	}
	d.loaded.Store(true)
	close(d.ready)
	d.log.Named("cluster").Info("** IPFS Cluster is READY **")
}

func (d *daemon) raftMajority() bool {
	m := d.state.getMembership()
	if len(m.Peers) == 0 {
		return false
	}
	reach := 0
	if _, ok := m.Peers[d.id.ID]; ok {
		reach++
	}
	for _, c := range d.peers.alive(time.Now(), false) {
		if _, ok := m.Peers[c.id]; ok && c.id != d.id.ID {
			reach++
		}
	}
	return reach >= len(m.Peers)/2+1
}
