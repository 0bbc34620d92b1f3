package systemdtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/harness"
)

const (
	from = "1.0.8"
	// failingFirst is the first upgrade tried on the installed cluster; its
	// peer fails at start (fault fail-start).
	failingFirst = "1.1.6"
	to           = "1.1.7"
	// failing is a later release whose peer fails at start.
	failing = "1.1.8"
	// next is the release of the downtime figure through upgraded; byHand the
	// one an operator swaps in by hand for the figure beside it.
	next   = "1.1.9"
	byHand = "1.2.0"
	pins   = 8
)

// Releases served to the daemons, by the name the test announces them with.
const (
	relFailFirst = "fail-first" // failingFirst, failing at start
	relTo        = "to"         // to, good
	relFailLater = "fail-later" // failing, failing at start, tried once the cluster runs to
	relNext      = "next"       // next, good
)

// site is the whole scene: three hosts with the .deb, a simulated cluster
// peer each, and the releases served over HTTP on 127.0.0.1.
type site struct {
	e       *Engine
	hosts   []Host
	peers   []simtest.Peer
	release map[string][]string // release name (relTo...) -> announce arguments
	byHand  simtest.Binaries    // the release swapped in by hand
	keyPath string
}

func moduleRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("finding the module root: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func TestDebOnSystemdHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the systemd-host tests need root: podman and debootstrap run as root (CI runs as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	begin := time.Now()
	s := setUp(t, ctx)
	t.Logf("set up in %s", time.Since(begin).Round(time.Second))

	t.Run("units verify and run hardened as their own users", func(t *testing.T) { checkHardening(t, ctx, s) })
	t.Run("daemon user cannot manage other units", func(t *testing.T) { checkNarrowRight(t, ctx, s) })
	// The very first upgrade of the packaged cluster fails: the rollback
	// must bring back the version the peers were installed with, whether
	// one peer stopped (auto picks rolling) or all of them (standard).
	t.Run("failing first upgrade rolls back", func(t *testing.T) {
		s.requireRolledBack(t, ctx, relFailFirst, from)
		s.requireRolledBack(t, ctx, relFailFirst, from, "--procedure", "standard", "--allow-failed-version")
	})
	t.Run("standard upgrade through the systemd runner", func(t *testing.T) {
		if out, err := s.announce(ctx, relTo); err != nil {
			s.dumpJournals(t, ctx)
			t.Fatalf("upgrade: %v\n%s", err, out)
		}
		s.requirePeers(t, ctx, to)
	})
	t.Run("failing new version rolls back", func(t *testing.T) {
		s.requireRolledBack(t, ctx, relFailLater, to)
	})
	t.Run("downtime through the systemd runner next to by hand", func(t *testing.T) { measureDowntime(t, ctx, s) })
	t.Run("bad unit or missing rule refused before the peer is touched", func(t *testing.T) { checkBadInput(t, ctx, s) })
	t.Run("service install survives a host restart", func(t *testing.T) { checkServiceInstall(t, ctx, s) })
	t.Run("purge leaves only config and backups", func(t *testing.T) { checkPurge(t, ctx, s) })
	t.Logf("whole test %s", time.Since(begin).Round(time.Second))
}

func setUp(t *testing.T, ctx context.Context) *site {
	root := moduleRoot(t)
	work := t.TempDir()
	dist := filepath.Join(work, "dist")
	mk := exec.CommandContext(ctx, "make", "-C", root, "dist", "DIST_ARCHS="+runtime.GOARCH, "DIST_DIR="+dist)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make dist: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*_"+runtime.GOARCH+".deb"))
	if len(debs) != 1 {
		t.Fatalf("make dist made %v, want one .deb for %s", debs, runtime.GOARCH)
	}
	e, err := StartEngine(ctx, filepath.Join(root, "..", "shared", "tools"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.EnsureImage(ctx); err != nil {
		t.Fatal(err)
	}
	build := filepath.Join(work, "build")
	v1, err := simtest.Build(ctx, build, simtest.BuildSpec{Version: from})
	if err != nil {
		t.Fatal(err)
	}
	s := &site{e: e, release: map[string][]string{}}
	s.peers, err = simtest.InitCluster(ctx, filepath.Join(work, "cluster"), 3, "crdt", v1)
	if err != nil {
		t.Fatal(err)
	}
	serveReleases(t, ctx, s, build, filepath.Join(work, "release"))

	var names []string
	for i := range s.peers {
		name := fmt.Sprintf("upgraded-sd%d-%d", i, os.Getpid())
		names = append(names, name)
		s.hosts = append(s.hosts, Host{E: e, Name: name})
	}
	t.Cleanup(func() { e.StopHosts(names...) })
	if err := e.StartHosts(ctx, names...); err != nil {
		t.Fatal(err)
	}
	for i, h := range s.hosts {
		installHost(t, ctx, h, debs[0], s.peers[i].Dir, v1)
	}
	// The operator key lives on host 0, root only.
	s.keyPath = "/root/operator.key"
	out, err := s.hosts[0].Sh(ctx, "upgraded keygen --out "+s.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	operator := strings.TrimSpace(out)
	var first string
	for i, h := range s.hosts {
		first = initHost(t, ctx, h, operator, first, i)
	}
	for _, h := range s.hosts {
		if _, err := h.Sh(ctx, "systemctl start ipfs-cluster.service upgraded.service"); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range s.peers {
		if err := WaitFor(ctx, "peer "+strconv.Itoa(i)+" answering", func() (bool, string) {
			code, body, err := simtest.Get(ctx, p.APIURL, "/id")
			return err == nil && code == 200, fmt.Sprint(code, string(body), err)
		}); err != nil {
			t.Fatal(err)
		}
	}
	for k := 0; k < pins; k++ {
		cid := fakeCID(k)
		if code, body, err := simtest.Do(ctx, "POST", s.peers[0].APIURL, "/pins/"+cid); err != nil || code != 200 {
			t.Fatalf("pinning %s: %d %s %v", cid, code, body, err)
		}
	}
	s.waitRegistered(t, ctx)
	return s
}

// installHost installs the .deb on a fresh host and gives it its peer: the
// cluster folder (shared through group ipfs-cluster) and the installed
// simulator binaries that `upgraded init` imports.
func installHost(t *testing.T, ctx context.Context, h Host, deb, peerDir string, v1 simtest.Binaries) {
	t.Helper()
	steps := []func() error{
		func() error { return h.Copy(ctx, deb, "/tmp/upgraded.deb") },
		func() error { _, err := h.Sh(ctx, "dpkg -i /tmp/upgraded.deb"); return err },
		func() error { return h.Copy(ctx, peerDir+"/.", "/var/lib/ipfs-cluster/") },
		func() error {
			_, err := h.Sh(ctx, "chown -R ipfs-cluster:ipfs-cluster /var/lib/ipfs-cluster && chmod -R g+rwX /var/lib/ipfs-cluster && mkdir -p /opt/sim")
			return err
		},
		func() error { return h.Copy(ctx, v1.Service, "/opt/sim/ipfs-cluster-service") },
		func() error { return h.Copy(ctx, v1.Ctl, "/opt/sim/ipfs-cluster-ctl") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("installing %s: %v", h.Name, err)
		}
	}
}

// initHost runs `upgraded init` as the daemon's user with the systemd
// runner, tunes the timeouts for a test, and returns the first host's address.
func initHost(t *testing.T, ctx context.Context, h Host, operator, first string, i int) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"upgraded", "init", "--config", "/var/lib/upgraded", "--cluster-config", "/var/lib/ipfs-cluster",
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port), "--trust", operator,
		"--service-bin", "/opt/sim/ipfs-cluster-service", "--ctl-bin", "/opt/sim/ipfs-cluster-ctl",
		"--runner", "systemd", "--unit", "ipfs-cluster.service"}
	if first != "" {
		args = append(args, "--bootstrap", first)
	}
	if out, err := h.As(ctx, "upgraded", args...); err != nil {
		t.Fatalf("init on %s: %v\n%s", h.Name, err, out)
	}
	raw, err := h.Sh(ctx, "cat /var/lib/upgraded/upgraded.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default("/var/lib/upgraded")
	if err := cfg.LoadJSON([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	cfg.Timeouts.Verify, cfg.Timeouts.Prepare = 15*time.Second, 60*time.Second
	cfg.Timeouts.Switch, cfg.Timeouts.Rollback = 60*time.Second, 60*time.Second
	b, err := cfg.ToJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Write(ctx, "/var/lib/upgraded/upgraded.json", b, "upgraded", "600"); err != nil {
		t.Fatal(err)
	}
	if first != "" {
		return first
	}
	out, err := h.As(ctx, "upgraded", "upgraded", "id", "--config", "/var/lib/upgraded")
	f := strings.Fields(out)
	if err != nil || len(f) < 2 {
		t.Fatalf("upgraded id on %s: %q %v", h.Name, out, err)
	}
	return f[1]
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fakeCID(n int) string { return harness.FakeCID("systemd", n) }

// serveReleases builds the target release, good and failing, and serves the
// tarballs on 127.0.0.1, which the hosts share.
func serveReleases(t *testing.T, ctx context.Context, s *site, build, dir string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l) //nolint:errcheck // ends with Close below
	t.Cleanup(func() { srv.Close() })
	for name, spec := range map[string]simtest.BuildSpec{
		relFailFirst: {Version: failingFirst, Fault: "fail-start"},
		relTo:        {Version: to},
		relFailLater: {Version: failing, Fault: "fail-start"},
		relNext:      {Version: next},
	} {
		b, err := simtest.Build(ctx, build, spec)
		if err != nil {
			t.Fatal(err)
		}
		sub := "release-" + name
		arts, err := simtest.ReleaseTarballs(b, filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--version", spec.Version}
		for _, a := range arts {
			url := fmt.Sprintf("http://%s/%s/%s", l.Addr(), sub, filepath.Base(a.Path))
			args = append(args, "--artifact", url, "--sha256", a.SHA256)
		}
		s.release[name] = args
	}
	if s.byHand, err = simtest.Build(ctx, build, simtest.BuildSpec{Version: byHand}); err != nil {
		t.Fatal(err)
	}
}

// announce announces release name through host 0 and waits for the plan's end.
func (s *site) announce(ctx context.Context, name string, extra ...string) (string, error) {
	args := append([]string{"exec", s.hosts[0].Name, "upgraded", "announce", "--config", "/var/lib/upgraded",
		"--key", s.keyPath, "--wait"}, s.release[name]...)
	actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return s.e.Run(actx, nil, "podman", append(args, extra...)...)
}

// requireRolledBack announces a release that fails at start and requires
// the plan to end rolled back with every peer on version back, full pinset.
func (s *site) requireRolledBack(t *testing.T, ctx context.Context, name, back string, extra ...string) {
	t.Helper()
	out, err := s.announce(ctx, name, extra...)
	if err == nil || !strings.Contains(out, "rolled-back") || strings.Contains(out, "rollback-failed") {
		s.dumpJournals(t, ctx)
		t.Fatalf("announce of failing release %s %v should end rolled-back (err %v):\n%s", name, extra, err, out)
	}
	s.requirePeers(t, ctx, back)
}

func (s *site) waitRegistered(t *testing.T, ctx context.Context) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := WaitFor(wctx, "every daemon registered", func() (bool, string) {
		out, err := s.hosts[0].Sh(wctx, "upgraded status --config /var/lib/upgraded --json")
		if err != nil {
			return false, out
		}
		var r struct {
			Leader  string            `json:"leader"`
			Daemons int               `json:"daemons"`
			Peers   []json.RawMessage `json:"peers"`
		}
		err = json.Unmarshal([]byte(out), &r)
		return err == nil && r.Leader != "" && r.Daemons == len(s.hosts) && len(r.Peers) == len(s.hosts), out
	}); err != nil {
		s.dumpJournals(t, ctx)
		t.Fatal(err)
	}
}

// dumpJournals logs the end of both units' journals on every host, for a
// failure to say why.
func (s *site) dumpJournals(t *testing.T, ctx context.Context) {
	for _, h := range s.hosts {
		log, _ := h.Sh(ctx, "journalctl -u upgraded -u ipfs-cluster --no-pager | tail -40; ls -laR /var/lib/upgraded/bin | head -30")
		t.Logf("%s:\n%s", h.Name, log)
	}
}

// requirePeers checks that every peer answers version and holds every pin.
func (s *site) requirePeers(t *testing.T, ctx context.Context, version string) {
	t.Helper()
	for i, p := range s.peers {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := WaitFor(wctx, fmt.Sprintf("peer %d on %s with %d pins", i, version, pins), func() (bool, string) {
			_, body, err := simtest.Get(wctx, p.APIURL, "/version")
			n := simtest.PinCount(wctx, p.APIURL)
			return err == nil && strings.Contains(string(body), version) && n == pins, fmt.Sprint(string(body), n, err)
		})
		cancel()
		if err != nil {
			t.Error(err)
		}
	}
}
