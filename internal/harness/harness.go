// Package harness runs whole test clusters on 127.0.0.1: N simulated IPFS
// Cluster peers, each with a real upgraded daemon process beside it, driven
// through the real CLI. The end-to-end tests, the benchmark and `upgraded
// demo` all use it, so the demo shows exactly what the tests prove.
package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
)

// Options describe a test cluster.
type Options struct {
	Root        string // work folder (everything lives under it)
	Peers       int
	Consensus   string // crdt (default) or raft
	From        simtest.BuildSpec
	UpgradedBin string // the upgraded binary to run
	BuildDir    string // where simulator builds are kept (default Root/build); share it to build once
	// Tune edits each daemon's configuration after init (timeouts for tests).
	Tune func(c *config.Config)
	// TuneHost edits daemon i's configuration after Tune. Both are called
	// from several goroutines at once (hosts are set up in parallel).
	TuneHost func(i int, c *config.Config)
}

// Cluster is a running test cluster.
type Cluster struct {
	opt        Options
	BuildDir   string
	From       simtest.Binaries
	Peers      []simtest.Peer
	Hosts      []*Host
	OperatorID string
	KeyFile    string

	mu sync.Mutex
}

// Host is one daemon and the cluster peer beside it.
type Host struct {
	Index     int
	ConfigDir string
	Listen    string
	Addr      string // full /p2p multiaddr, once known
	Peer      simtest.Peer
	LogPath   string

	cmd  *exec.Cmd
	done chan struct{}
}

// Setup builds the simulator, creates the cluster peers' and daemons' config
// folders and an operator key. Nothing runs yet.
func Setup(ctx context.Context, opt Options) (*Cluster, error) {
	if opt.Consensus == "" {
		opt.Consensus = "crdt"
	}
	if opt.Peers <= 0 {
		return nil, errors.New("harness: at least one peer")
	}
	if opt.BuildDir == "" {
		opt.BuildDir = filepath.Join(opt.Root, "build")
	}
	c := &Cluster{opt: opt, BuildDir: opt.BuildDir}
	var err error
	if c.From, err = simtest.Build(ctx, c.BuildDir, opt.From); err != nil {
		return nil, fmt.Errorf("building simulator %s: %w", opt.From.Version, err)
	}
	if c.Peers, err = simtest.InitCluster(ctx, filepath.Join(opt.Root, "cluster"), opt.Peers, opt.Consensus, c.From); err != nil {
		return nil, fmt.Errorf("initialising the cluster peers: %w", err)
	}
	c.KeyFile = filepath.Join(opt.Root, "operator.key")
	out, err := c.cli(ctx, "keygen", "--out", c.KeyFile)
	if err != nil {
		return nil, err
	}
	c.OperatorID = strings.TrimSpace(out)
	c.Hosts = make([]*Host, len(c.Peers))
	if err := parallel(len(c.Peers), setupWorkers, func(i int) error {
		h, err := c.initHost(ctx, i, c.Peers[i])
		c.Hosts[i] = h
		return err
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// setupWorkers bounds how many hosts are initialised at once (each runs the CLI twice).
const setupWorkers = 4

// initHost writes daemon i's configuration beside cluster peer p.
func (c *Cluster) initHost(ctx context.Context, i int, p simtest.Peer) (*Host, error) {
	opt := c.opt
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	h := &Host{Index: i, ConfigDir: filepath.Join(opt.Root, fmt.Sprintf("upgraded%d", i)),
		Listen: fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port), Peer: p}
	h.LogPath = filepath.Join(opt.Root, fmt.Sprintf("upgraded%d.log", i))
	args := []string{"init", "--config", h.ConfigDir, "--cluster-config", p.Dir, "--listen", h.Listen,
		"--trust", c.OperatorID, "--service-bin", c.From.Service, "--ctl-bin", c.From.Ctl}
	if _, err := c.cli(ctx, args...); err != nil {
		return nil, err
	}
	cfg, err := config.Load(h.ConfigDir)
	if err != nil {
		return nil, err
	}
	cfg.StopPeerOnExit = true
	if opt.Tune != nil {
		opt.Tune(cfg)
	}
	if opt.TuneHost != nil {
		opt.TuneHost(i, cfg)
	}
	if err := cfg.Save(); err != nil {
		return nil, err
	}
	out, err := c.cli(ctx, "id", "--config", h.ConfigDir)
	if err != nil {
		return nil, err
	}
	lines := strings.Fields(out)
	if len(lines) < 2 {
		return nil, fmt.Errorf("upgraded id printed %q", out)
	}
	h.Addr = lines[1]
	return h, nil
}

// parallel runs fn(0..n-1) on at most workers goroutines and returns every error, joined.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for w := 0; w < min(n, workers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// Ports handed out by freePort in this process. The kernel may give a port
// that was free a moment ago to the next bind(0) again, and hosts are set
// up in parallel: two daemons of one N=50 benchmark were once given the
// same port, both listened on it (libp2p sets SO_REUSEPORT), and each took
// the other's address for its own ("dial to self attempted").
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a port free now and never returned before in this process.
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port, nil
		}
	}
	return 0, errors.New("finding a free port: the kernel kept offering ports already given out")
}

// cli runs the upgraded CLI and returns its standard output.
func (c *Cluster) cli(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, c.opt.UpgradedBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("upgraded %s: %w: %s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// CLIOrErr runs the upgraded CLI and returns its output or its error text.
func (c *Cluster) CLIOrErr(ctx context.Context, args ...string) string {
	out, err := c.cli(ctx, args...)
	if err != nil {
		return err.Error()
	}
	return out
}

// CLI runs the upgraded CLI; the error carries its output.
func (c *Cluster) CLI(ctx context.Context, args ...string) (string, error) {
	return c.cli(ctx, args...)
}

// Start starts every daemon (the first founds the raft group, the others join
// it) and waits until every host is registered with its peer answering.
func (c *Cluster) Start(ctx context.Context) error {
	for i := range c.Hosts {
		if err := c.StartDaemon(i); err != nil {
			return err
		}
	}
	return c.WaitRegistered(ctx)
}

// StartDaemon starts daemon i (again).
func (c *Cluster) StartDaemon(i int) error { return c.StartDaemonEnv(i, nil) }

// StartDaemonEnv starts daemon i with extra environment (which its cluster
// peer inherits: CLUSTERSIM_FAULT makes that host's peer misbehave).
func (c *Cluster) StartDaemonEnv(i int, env []string) error {
	h := c.Hosts[i]
	args := []string{"daemon", "--config", h.ConfigDir}
	if i > 0 {
		args = append(args, "--bootstrap", c.Hosts[0].Addr)
	}
	logf, err := os.OpenFile(h.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.opt.UpgradedBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(os.Environ(), "UPGRADED_LOG_LEVEL=info"), env...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting daemon %d: %w", i, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	c.mu.Lock()
	h.cmd, h.done = cmd, done
	c.mu.Unlock()
	return nil
}

// PID is the process ID of daemon i, or 0 when it does not run.
func (c *Cluster) PID(i int) int {
	c.mu.Lock()
	cmd, done := c.Hosts[i].cmd, c.Hosts[i].done
	c.mu.Unlock()
	if cmd == nil {
		return 0
	}
	select {
	case <-done:
		return 0
	default:
		return cmd.Process.Pid
	}
}

// KillDaemon sends sig to daemon i and waits for it to exit.
func (c *Cluster) KillDaemon(ctx context.Context, i int, sig syscall.Signal) error {
	c.mu.Lock()
	h := c.Hosts[i]
	cmd, done := h.cmd, h.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return fmt.Errorf("daemon %d did not exit after %s", i, sig)
	}
}

// Socket is the control socket of daemon i.
func (c *Cluster) Socket(i int) string { return filepath.Join(c.Hosts[i].ConfigDir, "upgraded.sock") }

// HostID returns the peer ID of daemon i ("" when it does not answer).
func (c *Cluster) HostID(ctx context.Context, i int) string {
	st, err := c.Status(ctx, i)
	if err != nil {
		return ""
	}
	return st.Self.ID
}

// IndexOf returns the index of the daemon whose peer ID is id, or -1.
func (c *Cluster) IndexOf(ctx context.Context, id string) int {
	for i := range c.Hosts {
		if st, err := c.Status(ctx, i); err == nil && st.Self.ID == id {
			return i
		}
	}
	return -1
}

// CrashDaemon kills daemon i with SIGKILL, as a crash would, and starts it
// again with extra environment (nil for none).
func (c *Cluster) CrashDaemon(ctx context.Context, i int, env []string) error {
	if err := c.KillDaemon(ctx, i, syscall.SIGKILL); err != nil {
		return err
	}
	return c.StartDaemonEnv(i, env)
}

// Status asks daemon i for its view.
func (c *Cluster) Status(ctx context.Context, i int) (*control.Status, error) {
	cfg, err := config.Load(c.Hosts[i].ConfigDir)
	if err != nil {
		return nil, err
	}
	cl := control.NewClient(cfg.SocketPath())
	defer cl.Close() // a client per call must not leave its connection open in the daemon
	return cl.Status(ctx)
}

// WaitRegistered waits until daemon 0 sees every host registered and every
// daemon is a raft member.
func (c *Cluster) WaitRegistered(ctx context.Context) error {
	hosts, members := 0, 0
	err := simtest.WaitFor(ctx, "every daemon registered", func() bool {
		st, err := c.Status(ctx, 0)
		if err != nil {
			return false
		}
		hosts, members = len(st.Hosts), len(st.Members)
		return hosts == len(c.Hosts) && members == len(c.Hosts) && st.Leader != ""
	})
	if err != nil {
		return fmt.Errorf("%w (daemon 0 sees %d of %d hosts registered, %d raft members)", err, hosts, len(c.Hosts), members)
	}
	return nil
}

// WaitMeshed waits until every daemon reports a connection to every other
// registered daemon, asking each not yet there once a second. It returns
// the fewest connections a daemon reported last (-1: one never answered).
func (c *Cluster) WaitMeshed(ctx context.Context) (fewest int, err error) {
	want := len(c.Hosts) - 1
	last := map[int]int{} // daemons not yet connected to all: what each said last
	for i := range c.Hosts {
		last[i] = -1
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for i := range last {
			if st, err := c.Status(ctx, i); err == nil {
				last[i] = st.Self.Connected
			}
			if last[i] >= want {
				delete(last, i)
			}
		}
		if len(last) == 0 {
			return want, nil
		}
		select {
		case <-ctx.Done():
			fewest = want
			for _, n := range last {
				fewest = min(fewest, n)
			}
			return fewest, fmt.Errorf("waiting for every daemon to connect to the %d others: %w (%d not yet, one at %d)", want, ctx.Err(), len(last), fewest)
		case <-t.C:
		}
	}
}

// Release builds version spec and its release tarballs, returning the
// announce arguments (--version, --artifact, --sha256).
func (c *Cluster) Release(ctx context.Context, spec simtest.BuildSpec) ([]string, error) {
	b, err := simtest.Build(ctx, c.BuildDir, spec)
	if err != nil {
		return nil, fmt.Errorf("building simulator %s: %w", spec.Version, err)
	}
	dir := filepath.Join(c.opt.Root, "release", spec.Version+"-"+spec.Fault)
	arts, err := simtest.ReleaseTarballs(b, dir)
	if err != nil {
		return nil, err
	}
	args := []string{"--version", spec.Version}
	for _, a := range arts {
		args = append(args, "--artifact", a.Path, "--sha256", a.SHA256)
	}
	return args, nil
}

// Announce signs and announces through daemon i; extra are more CLI flags.
func (c *Cluster) Announce(ctx context.Context, i int, releaseArgs []string, extra ...string) (string, error) {
	args := append([]string{"announce", "--config", c.Hosts[i].ConfigDir, "--key", c.KeyFile}, releaseArgs...)
	out, err := c.cli(ctx, append(args, extra...)...)
	if err != nil {
		return out, err
	}
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "plan" {
		return out, fmt.Errorf("unexpected announce output %q", out)
	}
	return strings.TrimSuffix(f[1], ":"), nil
}

// WaitPlan waits until plan id ended, as daemon i sees it.
func (c *Cluster) WaitPlan(ctx context.Context, i int, id string) (*plan.Plan, error) {
	return c.WaitPlanEvery(ctx, i, id, 50*time.Millisecond)
}

// WaitPlanEvery is WaitPlan asking daemon i every interval. A benchmark asks
// seldom: each question costs the daemon a status answer, CPU that the
// upgrade it measures would otherwise have.
func (c *Cluster) WaitPlanEvery(ctx context.Context, i int, id string, every time.Duration) (*plan.Plan, error) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last *plan.Plan
	for {
		if st, err := c.Status(ctx, i); err == nil && st.Plan != nil && st.Plan.ID == id {
			last = st.Plan
			if st.Plan.Phase.Terminal() {
				return last, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("waiting for plan %s to end: %w", id, ctx.Err())
		case <-t.C:
		}
	}
}

// AddPins pins n new CIDs through peer i's REST API.
func (c *Cluster) AddPins(ctx context.Context, i, n int, tag string) ([]string, error) {
	var cids []string
	for k := 0; k < n; k++ {
		cid := FakeCID(tag, k)
		code, body, err := simtest.Do(ctx, "POST", c.Peers[i].APIURL, "/pins/"+cid+"?name="+tag)
		if err != nil || code != 200 {
			return cids, fmt.Errorf("pinning %s: %d %s %v", cid, code, body, err)
		}
		cids = append(cids, cid)
	}
	return cids, nil
}

// PeerView is what one cluster peer answers.
type PeerView struct {
	Version string
	Pins    int
	Err     error
}

// Views asks every cluster peer its version and pin count.
func (c *Cluster) Views(ctx context.Context) []PeerView {
	out := make([]PeerView, len(c.Peers))
	for i, p := range c.Peers {
		code, body, err := simtest.Get(ctx, p.APIURL, "/version")
		if err != nil || code != 200 {
			out[i].Err = fmt.Errorf("GET /version: %d %v", code, err)
			continue
		}
		var v struct{ Version string }
		_ = json.Unmarshal(body, &v)
		out[i].Version = v.Version
		out[i].Pins = simtest.PinCount(ctx, p.APIURL)
	}
	return out
}

// WaitPins waits until every peer answers with at least n pins.
func (c *Cluster) WaitPins(ctx context.Context, n int) error {
	return simtest.WaitFor(ctx, fmt.Sprintf("every peer to hold %d pins", n), func() bool {
		for _, v := range c.Views(ctx) {
			if v.Err != nil || v.Pins < n {
				return false
			}
		}
		return true
	})
}

// WaitHealthy waits until every peer answers with version, at least pins
// pins, and every other peer in its peer list: the health upgraded verifies.
func (c *Cluster) WaitHealthy(ctx context.Context, version string, pins int) error {
	return simtest.WaitFor(ctx, fmt.Sprintf("every peer healthy on %s with %d pins", version, pins), func() bool {
		for i, v := range c.Views(ctx) {
			if v.Err != nil || v.Version != version || v.Pins < pins {
				return false
			}
			code, body, err := simtest.Get(ctx, c.Peers[i].APIURL, "/peers")
			if err != nil || code != 200 || simtest.CountObjects(body) < len(c.Peers) {
				return false
			}
		}
		return true
	})
}

// Close stops every daemon (which stops its peer) and waits for them.
func (c *Cluster) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range c.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.KillDaemon(ctx, i, syscall.SIGTERM)
		}()
	}
	wg.Wait()
	for _, h := range c.Hosts { // a peer whose daemon died without stopping it
		killPidfile(filepath.Join(h.ConfigDir, "run", "ipfs-cluster-service.pid"))
	}
}

func killPidfile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var rec struct{ PID int }
	if json.Unmarshal(b, &rec) == nil && rec.PID > 1 {
		_ = syscall.Kill(rec.PID, syscall.SIGKILL)
	}
}

// FakeCID makes a real CIDv1 (raw codec, sha2-256 of tag-n, base32) so that
// every consumer decodes it as a real one.
func FakeCID(tag string, n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", tag, n)))
	raw := append([]byte{0x01, 0x55, 0x12, 0x20}, sum[:]...)
	return "b" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw))
}
