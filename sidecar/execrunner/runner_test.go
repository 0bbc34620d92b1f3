package execrunner

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/sidecar"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newRunner builds a runner on dir; cleanup stops whatever it left running.
func newRunner(t *testing.T, dir string, tweak func(*Config)) *Runner {
	t.Helper()
	cfg := helperConfig(dir)
	cfg.Logger = zaptest.NewLogger(t)
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(context.Background()); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return r
}

func mustStatus(t *testing.T, r *Runner) sidecar.Status {
	t.Helper()
	st, err := r.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	r := newRunner(t, dir, nil)
	if err := r.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop before any start: %v", err)
	}
	if err := r.Start(testCtx(t), sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", "/ip4/127.0.0.1/tcp/9096"}}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	s := waitStarts(t, dir, 1)
	wantArgs := "--config " + filepath.Join(dir, "cluster") + " daemon --bootstrap /ip4/127.0.0.1/tcp/9096"
	if s[0].args != wantArgs {
		t.Errorf("peer args %q, want %q", s[0].args, wantArgs)
	}
	st := mustStatus(t, r)
	if !st.Running || st.PID != s[0].pid || st.Since.IsZero() {
		t.Fatalf("status %+v, want running pid %d", st, s[0].pid)
	}
	if err := r.Start(testCtx(t), sidecar.StartOptions{}); err != nil {
		t.Errorf("second Start of a running peer: %v", err)
	}
	if err := r.Start(testCtx(t), sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", "x"}}); err == nil {
		t.Error("Start with extra arguments of a running peer succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "ipfs-cluster-service.pid")); err != nil {
		t.Errorf("pidfile: %v", err)
	}
	if err := r.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if processAlive(s[0].pid) {
		t.Error("peer still alive after Stop")
	}
	st = mustStatus(t, r)
	if st.Running || st.LastExit != "exit status 0" {
		t.Errorf("status after stop %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "ipfs-cluster-service.pid")); !os.IsNotExist(err) {
		t.Errorf("pidfile left after Stop: %v", err)
	}
	if err := r.Stop(testCtx(t)); err != nil {
		t.Errorf("Stop of a stopped peer: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log", LogFileName))
	for _, want := range []string{"=== upgraded: starting", "peer up", "peer stopping"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("peer log lacks %q:\n%s", want, log)
		}
	}
}

func TestStopKillsAPeerIgnoringSIGTERM(t *testing.T) {
	dir := t.TempDir()
	const grace = 300 * time.Millisecond
	r := newRunner(t, dir, func(c *Config) {
		c.StopTimeout = grace
		c.Env = append(c.Env, "HELPER_IGNORE_TERM=1")
	})
	if err := r.Start(testCtx(t), sidecar.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	pid := waitStarts(t, dir, 1)[0].pid // SIGTERM is ignored from here on
	begin := time.Now()
	if err := r.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("Stop took %v, less than the %v grace period: SIGTERM was not ignored?", took, grace)
	}
	if processAlive(pid) {
		t.Error("peer alive after Stop")
	}
	if st := mustStatus(t, r); !strings.Contains(st.LastExit, "killed") {
		t.Errorf("last exit %q, want a kill", st.LastExit)
	}
}

func TestRestartAfterCrash(t *testing.T) {
	dir := t.TempDir()
	r := newRunner(t, dir, nil)
	if err := r.Start(testCtx(t), sidecar.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	first := waitStarts(t, dir, 1)[0].pid
	syscall.Kill(first, syscall.SIGKILL)
	s := waitStarts(t, dir, 2)
	if s[1].pid == first {
		t.Fatal("no new process after the crash")
	}
	eventually(t, "status to show the new peer", func() bool {
		st := mustStatus(t, r)
		return st.Running && st.PID == s[1].pid
	})
	st := mustStatus(t, r)
	if st.Restarts != 1 || st.LastExit != "signal: killed" {
		t.Errorf("status %+v, want 1 restart after a kill", st)
	}
}

func TestCrashLoopBacksOffAndStopEndsIt(t *testing.T) {
	dir := t.TempDir()
	r := newRunner(t, dir, func(c *Config) { c.Env = append(c.Env, "HELPER_EXIT_CODE=3") })
	if err := r.Start(testCtx(t), sidecar.StartOptions{ExtraArgs: []string{"--bootstrap", "/ip4/127.0.0.1/tcp/1"}}); err != nil {
		t.Fatal(err)
	}
	s := waitStarts(t, dir, 6)
	// Each gap holds at least the backoff: 20, 40, 80, 160, then capped at 200 ms.
	for i, want := range []time.Duration{20, 40, 80, 160, 200} {
		if gap := s[i+1].at.Sub(s[i].at); gap < want*time.Millisecond {
			t.Errorf("restart %d came after %v, want at least %v", i+1, gap, want*time.Millisecond)
		}
	}
	if !strings.Contains(s[0].args, "--bootstrap") {
		t.Errorf("first start lacks its extra arguments: %q", s[0].args)
	}
	for _, st := range s[1:] {
		if strings.Contains(st.args, "--bootstrap") {
			t.Errorf("a restart repeated the one-time arguments: %q", st.args)
		}
	}
	if err := r.Stop(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, r)
	if st.Running || st.Restarts < 5 || st.LastExit != "exit status 3" {
		t.Errorf("status after stop %+v", st)
	}
	// Stop returned after the supervisor did, so no restart can follow; watch
	// for longer than the largest backoff to be sure.
	after := len(readStarts(t, dir))
	deadline := time.Now().Add(3 * 200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := len(readStarts(t, dir)); n != after {
			t.Fatalf("peer restarted after Stop (%d starts, then %d)", after, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 500 * time.Millisecond, max: 30 * time.Second, stableAfter: time.Minute}
	steps := []struct {
		name   string
		uptime time.Duration
		want   time.Duration
	}{
		{"first crash", 0, 500 * time.Millisecond},
		{"second quick crash doubles", time.Second, time.Second},
		{"third", 0, 2 * time.Second},
		{"fourth", 0, 4 * time.Second},
		{"fifth", 0, 8 * time.Second},
		{"sixth", 0, 16 * time.Second},
		{"seventh capped", 0, 30 * time.Second},
		{"stays capped", 0, 30 * time.Second},
		{"after a stable run back to min", 2 * time.Minute, 500 * time.Millisecond},
		{"then doubles again", 0, time.Second},
	}
	for _, s := range steps {
		if got := b.next(s.uptime); got != s.want {
			t.Errorf("%s: delay %v, want %v", s.name, got, s.want)
		}
	}
}

// TestAdoptAfterDaemonKilled runs a real daemon process that starts a peer,
// kills the daemon with SIGKILL, and checks that the peer survives and that a
// fresh runner adopts it, watches it, and stops it.
func TestAdoptAfterDaemonKilled(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	daemon := exec.Command(exe)
	daemon.Env = append(os.Environ(), "EXECRUNNER_HELPER=daemon", "HELPER_DIR="+dir)
	out, err := daemon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		daemon.Process.Kill()
		daemon.Wait()
		t.Fatalf("daemon helper said %q, %v", line, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	daemon.Process.Kill()
	daemon.Wait()
	waitStarts(t, dir, 1)
	if !processAlive(pid) {
		t.Fatal("the peer died with its daemon")
	}

	r := newRunner(t, dir, nil)
	if st := mustStatus(t, r); !st.Running || st.PID != pid {
		t.Fatalf("fresh runner status %+v, want the running peer %d", st, pid)
	}
	if err := r.Start(testCtx(t), sidecar.StartOptions{}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if s := readStarts(t, dir); len(s) != 1 {
		t.Fatalf("Start launched a second peer instead of adopting: %d starts", len(s))
	}
	if st := mustStatus(t, r); st.PID != pid {
		t.Fatalf("status pid %d, want adopted %d", st.PID, pid)
	}
	// The adopted peer crashes: the runner notices by polling and restarts it.
	syscall.Kill(pid, syscall.SIGKILL)
	s := waitStarts(t, dir, 2)
	eventually(t, "the restarted peer", func() bool {
		st := mustStatus(t, r)
		return st.Running && st.PID == s[1].pid
	})
	if err := r.Stop(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if processAlive(s[1].pid) {
		t.Error("restarted peer alive after Stop")
	}
}

// TestStopAdoptedPeer stops a peer left by an earlier runner that was closed
// (the daemon exiting while the peer keeps serving).
func TestStopAdoptedPeer(t *testing.T) {
	dir := t.TempDir()
	old := newRunner(t, dir, nil)
	if err := old.Start(testCtx(t), sidecar.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	pid := waitStarts(t, dir, 1)[0].pid
	if err := old.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !processAlive(pid) {
		t.Fatal("Close stopped the peer")
	}
	r := newRunner(t, dir, nil)
	if err := r.Stop(testCtx(t)); err != nil {
		t.Fatalf("Stop of the adopted peer: %v", err)
	}
	eventually(t, "the adopted peer to be gone", func() bool { return !processAlive(pid) })
	if st := mustStatus(t, r); st.Running {
		t.Errorf("status after stop %+v", st)
	}
}

func TestStalePidfileIsNotAdopted(t *testing.T) {
	exe, _ := os.Executable()
	dead := exec.Command(exe)
	dead.Env = append(os.Environ(), "EXECRUNNER_HELPER=peer", "HELPER_EXIT_CODE=0", "GORACE=atexit_sleep_ms=0", "HELPER_DIR="+t.TempDir())
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		rec  func(cfg Config) pidRecord
		raw  string
	}{
		{"dead process", func(cfg Config) pidRecord {
			return pidRecord{PID: dead.Process.Pid, Binary: exe, Config: cfg.ClusterConfigDir}
		}, ""},
		// This test process runs the same binary, but not as `daemon --config DIR`.
		{"foreign process", func(cfg Config) pidRecord {
			return pidRecord{PID: os.Getpid(), Binary: exe, Config: cfg.ClusterConfigDir}
		}, ""},
		{"garbage", nil, "not json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := helperConfig(dir)
			os.MkdirAll(filepath.Dir(cfg.PIDFile), 0o755)
			if c.rec != nil {
				if err := writePIDFile(cfg.PIDFile, c.rec(cfg)); err != nil {
					t.Fatal(err)
				}
			} else {
				os.WriteFile(cfg.PIDFile, []byte(c.raw), 0o644)
			}
			r := newRunner(t, dir, nil)
			if st := mustStatus(t, r); st.Running {
				t.Fatalf("stale pidfile reported as running: %+v", st)
			}
			if err := r.Start(testCtx(t), sidecar.StartOptions{}); err != nil {
				t.Fatal(err)
			}
			s := waitStarts(t, dir, 1)
			rec, err := readPIDFile(cfg.PIDFile)
			if err != nil || rec.PID != s[0].pid {
				t.Fatalf("pidfile %+v, %v; want the new peer %d", rec, err, s[0].pid)
			}
		})
	}
}

func TestIsOurPeer(t *testing.T) {
	// Our own cmdline is the test binary without `daemon`: never our peer.
	exe, _ := os.Executable()
	if isOurPeer(pidRecord{PID: os.Getpid(), Binary: exe, Config: "/x"}, "/x") {
		t.Error("the test process was taken for the peer")
	}
	if isOurPeer(pidRecord{PID: 1 << 30, Binary: exe, Config: "/x"}, "/x") {
		t.Error("a nonexistent pid was taken for the peer")
	}
}

func TestConfigValidation(t *testing.T) {
	good := helperConfig(t.TempDir())
	cases := map[string]func(*Config){
		"no binary":     func(c *Config) { c.Binary = nil },
		"no config dir": func(c *Config) { c.ClusterConfigDir = "" },
		"no pidfile":    func(c *Config) { c.PIDFile = "" },
		"no log dir":    func(c *Config) { c.LogDir = "" },
		"max below min": func(c *Config) { c.MaxBackoff = time.Millisecond },
	}
	for name, mutate := range cases {
		c := good
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	c, err := Config{Binary: good.Binary, ClusterConfigDir: "/c", PIDFile: "/p", LogDir: "/l"}.withDefaults()
	if err != nil || c.StopTimeout != DefaultStopTimeout || c.MinBackoff != DefaultMinBackoff || c.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults: %+v, %v", c, err)
	}
}
