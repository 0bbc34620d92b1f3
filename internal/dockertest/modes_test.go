package dockertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/harness"
	"github.com/upgraded/upgraded/sidecar"
	"github.com/upgraded/upgraded/sidecar/dockerrunner"
)

const pins = 8

type image struct{ ref, id string }

// sidecarSite is three cluster containers, each with an upgraded container.
type sidecarSite struct {
	l        *lab
	c        *harness.Cluster
	clusters []string // container names of the peers
	daemons  []string // container names of the upgraded daemons
	imgs     map[string]image
}

func TestContainerModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the container tests need root: podman runs as root (CI runs as root)")
	}
	t.Setenv("CGO_ENABLED", "0") // simulator binaries run in FROM-scratch images
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	begin := time.Now()
	l := newLab(t, ctx)
	l.buildUpgraded(t, ctx)
	imgs := map[string]image{}
	for tag, spec := range map[string]simtest.BuildSpec{"1.0.8": {Version: "1.0.8"}, "1.1.6": {Version: "1.1.6"},
		"1.1.6-again": {Version: "1.1.6"}, "1.1.7-fail": {Version: "1.1.7", Fault: "fail-start"}} {
		ref, id := l.clusterImage(t, ctx, spec, tag)
		imgs[tag] = image{ref, id}
	}
	t.Logf("images built in %s", time.Since(begin).Round(time.Second))

	t.Run("image of upgraded runs as a non-root user with a data volume", func(t *testing.T) {
		got := l.podman(t, ctx, "image", "inspect", "--format", "{{.Config.User}} {{range $k, $v := .Config.Volumes}}{{$k}}{{end}}", l.upgraded)
		if got != "10001:10001 /data" {
			t.Fatalf("user and volumes = %q, want 10001:10001 /data", got)
		}
		out := l.podman(t, ctx, "run", "--rm", "--label", label+"="+l.run, l.upgraded, "--help")
		if !strings.Contains(out, "upgraded runs beside every ipfs-cluster-service peer") {
			t.Fatalf("upgraded --help in its image printed %q", out)
		}
	})
	s := setUpSidecars(t, ctx, l, imgs)
	t.Logf("sidecar site up in %s", time.Since(begin).Round(time.Second))
	t.Run("bad input refused before the peer is touched", func(t *testing.T) { checkBadImages(t, ctx, s) })
	t.Run("socket missing or forbidden refused at start", func(t *testing.T) { checkBadSocket(t, ctx, s) })
	t.Run("upgrade through the Docker API", func(t *testing.T) {
		s.upgrade(t, ctx, "1.1.6", plan.PhaseDone)
		s.requireImage(t, ctx, imgs["1.1.6"].id)
		prev := filepath.Join(s.c.Hosts[0].ConfigDir, "run", "docker", s.clusters[0]+".previous.json")
		b, err := os.ReadFile(prev)
		if err != nil || !strings.Contains(string(b), imgs["1.0.8"].id) {
			t.Fatalf("the old definition (image %s) should be kept for rollback in %s: %v %s", imgs["1.0.8"].id, prev, err, b)
		}
	})
	t.Run("failing tag rolls back to the old image", func(t *testing.T) {
		s.upgrade(t, ctx, "1.1.7-fail", plan.PhaseRolledBack)
		s.requireImage(t, ctx, imgs["1.1.6"].id)
	})
	t.Run("downtime through the API next to by hand", func(t *testing.T) { measureDowntime(t, ctx, s) })
	t.Run("one-container mode upgrades its binary on the volume", func(t *testing.T) { checkOneContainer(t, ctx, l) })
	t.Logf("whole test %s", time.Since(begin).Round(time.Second))
}

func setUpSidecars(t *testing.T, ctx context.Context, l *lab, imgs map[string]image) *sidecarSite {
	s := &sidecarSite{l: l, imgs: imgs}
	for i := 0; i < 3; i++ {
		s.clusters = append(s.clusters, fmt.Sprintf("ut-cluster%d-%s", i, l.run))
		s.daemons = append(s.daemons, fmt.Sprintf("ut-upgraded%d-%s", i, l.run))
	}
	c, err := harness.Setup(ctx, harness.Options{Root: filepath.Join(l.work, "sidecar"), Peers: 3,
		From: simtest.BuildSpec{Version: "1.0.8"}, UpgradedBin: l.bin, BuildDir: l.buildDir,
		Tune: func(c *config.Config) {
			c.StopPeerOnExit = false
			c.Runner.Type = config.RunnerDocker
			c.Runner.StopTimeout = 10 * time.Second
			c.Timeouts.Verify, c.Timeouts.Switch, c.Timeouts.Rollback = 30*time.Second, time.Minute, time.Minute
		},
		TuneHost: func(i int, c *config.Config) {
			c.Runner.Docker.Socket = "unix:///var/run/docker.sock"
			c.Runner.Docker.Container = s.clusters[i]
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	reinitWithoutBinaries(t, ctx, s, len(c.Hosts)-1)
	for i, p := range c.Peers {
		l.podman(t, ctx, s.clusterArgs(i, imgs["1.0.8"].ref, p.Dir)...)
	}
	if err := c.WaitHealthy(ctx, "1.0.8", 0); err != nil {
		s.dump(t, ctx)
		t.Fatal(err)
	}
	if _, err := c.AddPins(ctx, 0, pins, "docker"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitPins(ctx, pins); err != nil {
		t.Fatal(err)
	}
	for i, h := range c.Hosts {
		args := []string{"run", "-d", "--name", s.daemons[i], "--label", label + "=" + l.run, "--network", "host",
			"--user", "0:0", "-e", "UPGRADED_LOG_LEVEL=info",
			"-v", l.socket + ":/var/run/docker.sock", "-v", h.ConfigDir + ":" + h.ConfigDir, "-v", h.Peer.Dir + ":" + h.Peer.Dir,
			l.upgraded, "daemon", "--config", h.ConfigDir}
		if i > 0 {
			args = append(args, "--bootstrap", c.Hosts[0].Addr)
		}
		l.podman(t, ctx, args...)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.WaitRegistered(wctx); err != nil {
		s.dump(t, ctx)
		t.Fatal(err)
	}
	return s
}

// reinitWithoutBinaries makes host i's config folder again the way an
// operator of a sidecar does: `upgraded init --runner docker` with no
// cluster binary at all (the harness imported some), the test's tuning kept.
// The upgrade and rollback that follow prove the daemon keeps the running
// image's binaries itself.
func reinitWithoutBinaries(t *testing.T, ctx context.Context, s *sidecarSite, i int) {
	h := s.c.Hosts[i]
	tuned, err := config.Load(h.ConfigDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.ConfigDir, "bin")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, s.l.bin, "init", "--config", h.ConfigDir, "--force", "--cluster-config", h.Peer.Dir,
		"--listen", h.Listen, "--trust", s.c.OperatorID, "--runner", "docker",
		"--container", s.clusters[i], "--docker-socket", "unix:///var/run/docker.sock")
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init --runner docker without binaries: %v\n%s", err, out)
	}
	cfg, err := config.Load(h.ConfigDir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runner.Type != tuned.Runner.Type || cfg.Runner.Docker != tuned.Runner.Docker {
		t.Fatalf("init wrote runner %+v, the harness had %+v", cfg.Runner, tuned.Runner)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.ConfigDir, "bin", "versions")); len(entries) > 0 {
		t.Fatalf("init --runner docker imported binaries: %v", entries)
	}
	cfg.Timeouts, cfg.StopPeerOnExit, cfg.Runner.StopTimeout = tuned.Timeouts, tuned.StopPeerOnExit, tuned.Runner.StopTimeout
	if err := cfg.Save(); err != nil {
		t.Fatal(err)
	}
}

// clusterArgs runs peer i from ref the way an operator would: host
// networking, its folder mounted, a label of its own.
func (s *sidecarSite) clusterArgs(i int, ref, dir string) []string {
	return []string{"run", "-d", "--name", s.clusters[i], "--label", label + "=" + s.l.run, "--label", "role=cluster-peer",
		"--network", "host", "-v", dir + ":" + dir, ref, "--config", dir, "daemon"}
}

func (s *sidecarSite) dump(t *testing.T, ctx context.Context) {
	for _, n := range append(append([]string{}, s.clusters...), s.daemons...) {
		out, _ := s.l.e.Run(ctx, nil, "podman", "logs", "--tail", "30", n)
		t.Logf("--- %s:\n%s", n, out)
	}
}

// announce announces release tag's image through daemon 0 and waits for the plan's end.
func (s *sidecarSite) announce(t *testing.T, ctx context.Context, version string, img image) *plan.Plan {
	t.Helper()
	id, err := s.c.Announce(ctx, 0, []string{"--version", version, "--artifact", "docker-image:" + img.ref, "--sha256", img.id})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.c.WaitPlan(ctx, 0, id)
	if err != nil {
		s.dump(t, ctx)
		t.Fatal(err)
	}
	return p
}

func (s *sidecarSite) upgrade(t *testing.T, ctx context.Context, tag string, want plan.Phase) {
	t.Helper()
	version := strings.SplitN(tag, "-", 2)[0]
	p := s.announce(t, ctx, version, s.imgs[tag])
	if p.Phase != want {
		s.dump(t, ctx)
		t.Fatalf("plan to %s ended %s, want %s: %s", tag, p.Phase, want, reasons(p))
	}
	healthy := "1.1.6"
	if err := s.c.WaitHealthy(ctx, healthy, pins); err != nil {
		s.dump(t, ctx)
		t.Fatal(err)
	}
}

func reasons(p *plan.Plan) string {
	var b strings.Builder
	b.WriteString(p.Reason)
	for id, h := range p.Hosts {
		if h.Error != "" {
			fmt.Fprintf(&b, "; %s: %s", id, h.Error)
		}
	}
	return b.String()
}

// requireImage checks that every peer's container runs image id under its
// own name, with its label and mount kept.
func (s *sidecarSite) requireImage(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	for i, n := range s.clusters {
		got := s.l.podman(t, ctx, "inspect", "--format", `{{.Image}} {{.State.Running}} {{index .Config.Labels "role"}} {{range .Mounts}}{{.Destination}}{{end}}`, n)
		want := fmt.Sprintf("%s true cluster-peer %s", id, s.c.Peers[i].Dir)
		if strings.TrimPrefix(got, "sha256:") != want {
			t.Fatalf("container %s: got %q, want %q", n, got, want)
		}
	}
}

func (s *sidecarSite) containerIDs(t *testing.T, ctx context.Context) []string {
	var ids []string
	for _, n := range s.clusters {
		ids = append(ids, s.l.containerID(t, ctx, n))
	}
	return ids
}

func checkBadImages(t *testing.T, ctx context.Context, s *sidecarSite) {
	before := s.containerIDs(t, ctx)
	cases := []struct {
		name string
		img  image
		want string
	}{
		{"missing tag", image{strings.Replace(s.imgs["1.1.6"].ref, ":1.1.6-", ":9.9.9-", 1), s.imgs["1.1.6"].id}, "could not be pulled"},
		{"image of another version", s.imgs["1.0.8"], "not the target 1.1.6"},
		{"ID other than the announced sha256", image{s.imgs["1.1.6"].ref, s.imgs["1.0.8"].id}, "the announcement wants"},
	}
	for _, tc := range cases {
		p := s.announce(t, ctx, "1.1.6", tc.img)
		if p.Phase != plan.PhaseFailed || !strings.Contains(reasons(p), tc.want) {
			t.Errorf("%s: plan ended %s (%s), want failed with %q", tc.name, p.Phase, reasons(p), tc.want)
		}
	}
	if after := s.containerIDs(t, ctx); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("the peers' containers were replaced: %v -> %v", before, after)
	}
	if err := s.c.WaitHealthy(ctx, "1.0.8", pins); err != nil {
		t.Fatal(err)
	}
}

// checkBadSocket starts upgraded's image on a copy of host 0's folders as
// its own non-root user: without the socket, then with a socket it may not
// use. Both must end at once with the cause named, the peer untouched.
func checkBadSocket(t *testing.T, ctx context.Context, s *sidecarSite) {
	before := s.containerIDs(t, ctx)
	dir := filepath.Join(s.l.work, "badsocket")
	cfgDir, peerDir := filepath.Join(dir, "upgraded"), filepath.Join(dir, "peer")
	for _, d := range []string{cfgDir, peerDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"service.json", "identity.json"} {
		b, err := os.ReadFile(filepath.Join(s.c.Peers[0].Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(peerDir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	cfg := config.Default(cfgDir)
	cfg.ClusterConfig, cfg.Listen = peerDir, []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
	cfg.Runner.Type, cfg.Runner.Docker.Container = config.RunnerDocker, s.clusters[0]
	if err := cfg.Save(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "chown", "-R", "10001:10001", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	for _, tc := range []struct {
		name  string
		mount []string
		want  string
	}{
		{"no socket", nil, "no such file or directory"},
		{"socket without permission", []string{"-v", s.l.socket + ":/var/run/docker.sock"}, "permission denied"},
	} {
		args := append([]string{"run", "--rm", "--label", label + "=" + s.l.run, "--network", "host", "-v", dir + ":" + dir}, tc.mount...)
		args = append(args, s.l.upgraded, "daemon", "--config", cfgDir)
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := s.l.e.Run(rctx, nil, "podman", args...)
		cancel()
		if err == nil || !strings.Contains(out, "docker socket /var/run/docker.sock") || !strings.Contains(out, tc.want) {
			t.Errorf("%s: upgraded should stop at once naming the socket and %q; got %v:\n%s", tc.name, tc.want, err, out)
		}
	}
	if after := s.containerIDs(t, ctx); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("the peers' containers were touched: %v -> %v", before, after)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// measureDowntime moves peer 0 to another image of the same release twice:
// through the runner (API: stop, recreate, start) and by hand (stop, rm,
// run), each timed from the stop to the peer verified again.
func measureDowntime(t *testing.T, ctx context.Context, s *sidecarSite) {
	for _, n := range s.daemons { // the daemons must not react to what follows
		s.l.podman(t, ctx, "stop", "-t", "5", n)
	}
	r, err := dockerrunner.New(ctx, dockerrunner.Config{Engine: dockerrunner.NewEngine(s.l.socket), Container: s.clusters[0],
		StateDir: t.TempDir(), StopTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	peer := s.c.Peers[0]
	viaAPI := timed(t, ctx, s, func() {
		if err := r.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.SwitchImage(ctx, s.imgs["1.1.6-again"].ref); err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx, sidecar.StartOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if got := s.l.podman(t, ctx, "inspect", "--format", "{{.Image}}", s.clusters[0]); strings.TrimPrefix(got, "sha256:") != s.imgs["1.1.6-again"].id {
		t.Fatalf("after the switch through the API the container runs %s", got)
	}
	byHand := timed(t, ctx, s, func() {
		s.l.podman(t, ctx, "stop", "-t", "10", s.clusters[0])
		s.l.podman(t, ctx, "rm", s.clusters[0])
		s.l.podman(t, ctx, s.clusterArgs(0, s.imgs["1.1.6"].ref, peer.Dir)...)
	})
	t.Logf("FIGURE downtime of one peer's image switch (stop to verified: version and %d pins): Docker API %s, by hand (podman stop+rm+run) %s",
		pins, viaAPI.Round(time.Millisecond), byHand.Round(time.Millisecond))
}

func timed(t *testing.T, ctx context.Context, s *sidecarSite, do func()) time.Duration {
	t.Helper()
	begin := time.Now()
	do()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := simtest.WaitFor(wctx, "peer 0 verified", func() bool {
		v := s.c.Views(wctx)[0]
		return v.Err == nil && v.Version == "1.1.6" && v.Pins >= pins
	}); err != nil {
		s.dump(t, ctx)
		t.Fatal(err)
	}
	return time.Since(begin)
}

// checkOneContainer runs upgraded's image with its peer as its child, every
// folder on one volume, and upgrades the peer's binary without a new image.
func checkOneContainer(t *testing.T, ctx context.Context, l *lab) {
	root := filepath.Join(l.work, "one")
	c, err := harness.Setup(ctx, harness.Options{Root: root, Peers: 1, From: simtest.BuildSpec{Version: "1.0.8"},
		UpgradedBin: l.bin, BuildDir: l.buildDir,
		Tune: func(c *config.Config) { c.Timeouts.Verify = 30 * time.Second }})
	if err != nil {
		t.Fatal(err)
	}
	release, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "chown", "-R", "10001:10001", root).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	name := "ut-one-" + l.run
	l.podman(t, ctx, "run", "-d", "--name", name, "--label", label+"="+l.run, "--network", "host",
		"-v", root+":"+root, l.upgraded, "daemon", "--config", c.Hosts[0].ConfigDir)
	dump := func() {
		out, _ := l.e.Run(ctx, nil, "podman", "logs", "--tail", "40", name)
		t.Logf("--- %s:\n%s", name, out)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.WaitRegistered(wctx); err != nil {
		dump()
		t.Fatal(err)
	}
	if err := c.WaitHealthy(wctx, "1.0.8", 0); err != nil {
		dump()
		t.Fatal(err)
	}
	if _, err := c.AddPins(ctx, 0, 4, "one"); err != nil {
		t.Fatal(err)
	}
	imageBefore := l.podman(t, ctx, "inspect", "--format", "{{.Image}}", name)
	id, err := c.Announce(ctx, 0, release)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.WaitPlan(ctx, 0, id)
	if err != nil || p.Phase != plan.PhaseDone {
		dump()
		t.Fatalf("plan %s: %v %+v", id, err, p)
	}
	if err := c.WaitHealthy(ctx, "1.1.6", 4); err != nil {
		dump()
		t.Fatal(err)
	}
	if after := l.podman(t, ctx, "inspect", "--format", "{{.Image}} {{.State.Running}} {{.Config.User}}", name); after != imageBefore+" true " &&
		after != imageBefore+" true 10001:10001" {
		t.Fatalf("the container should run on, same image, as the image's user: %q (image before %s)", after, imageBefore)
	}
	if _, err := os.Stat(filepath.Join(c.Hosts[0].ConfigDir, "bin", "versions", "1.1.6", "ipfs-cluster-service")); err != nil {
		t.Fatalf("the new version should be kept on the volume: %v", err)
	}
}
