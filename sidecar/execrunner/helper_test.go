package execrunner

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/upgraded/upgraded/sidecar"
)

// The test binary doubles as the programs the runner supervises, chosen by
// $EXECRUNNER_HELPER:
//
//	peer:   a stand-in for `ipfs-cluster-service --config DIR daemon`; it
//	        appends "unixnano pid args" to $HELPER_DIR/starts once ready, exits
//	        0 on SIGTERM, ignores SIGTERM if $HELPER_IGNORE_TERM is set, and
//	        exits at once with $HELPER_EXIT_CODE if set (a crash loop).
//	daemon: an upgraded stand-in that starts a peer through a Runner, prints
//	        "ready PID" and waits to be killed.
func TestMain(m *testing.M) {
	switch os.Getenv("EXECRUNNER_HELPER") {
	case "peer":
		os.Exit(helperPeer())
	case "daemon":
		os.Exit(helperDaemon())
	}
	os.Exit(m.Run())
}

func helperPeer() int {
	sigs := make(chan os.Signal, 1)
	if os.Getenv("HELPER_IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	f, err := os.OpenFile(filepath.Join(os.Getenv("HELPER_DIR"), "starts"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 10
	}
	fmt.Fprintf(f, "%d %d %s\n", time.Now().UnixNano(), os.Getpid(), strings.Join(os.Args[1:], " "))
	f.Close()
	fmt.Println("peer up")
	if code := os.Getenv("HELPER_EXIT_CODE"); code != "" {
		n, _ := strconv.Atoi(code)
		return n
	}
	<-sigs // with SIGTERM ignored nothing arrives: only SIGKILL ends this
	fmt.Println("peer stopping")
	return 0
}

func helperDaemon() int {
	r, err := New(helperConfig(os.Getenv("HELPER_DIR")))
	if err != nil {
		fmt.Println("error", err)
		return 11
	}
	if err := r.Start(context.Background(), sidecar.StartOptions{}); err != nil {
		fmt.Println("error", err)
		return 12
	}
	st, _ := r.Status(context.Background())
	fmt.Println("ready", st.PID)
	select {} // until SIGKILL
}

// helperConfig is the runner configuration shared by tests and the daemon
// helper, so that a fresh runner recognises the daemon's peer.
func helperConfig(dir string) Config {
	exe, _ := os.Executable()
	return Config{
		Binary:           func() (string, error) { return exe, nil },
		ClusterConfigDir: filepath.Join(dir, "cluster"),
		PIDFile:          filepath.Join(dir, "run", "ipfs-cluster-service.pid"),
		LogDir:           filepath.Join(dir, "log"),
		// GORACE: a race-enabled helper otherwise sleeps a second at exit.
		Env:          []string{"EXECRUNNER_HELPER=peer", "HELPER_DIR=" + dir, "GORACE=atexit_sleep_ms=0"},
		StopTimeout:  5 * time.Second,
		MinBackoff:   20 * time.Millisecond,
		MaxBackoff:   200 * time.Millisecond,
		PollInterval: 20 * time.Millisecond,
	}
}

type start struct {
	at   time.Time
	pid  int
	args string
}

func readStarts(t *testing.T, dir string) []start {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "starts"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []start
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 3)
		if len(parts) < 3 {
			continue // a line being written
		}
		ns, _ := strconv.ParseInt(parts[0], 10, 64)
		pid, _ := strconv.Atoi(parts[1])
		out = append(out, start{at: time.Unix(0, ns), pid: pid, args: parts[2]})
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitStarts(t *testing.T, dir string, n int) []start {
	t.Helper()
	var s []start
	eventually(t, fmt.Sprintf("%d peer start(s)", n), func() bool {
		s = readStarts(t, dir)
		return len(s) >= n
	})
	return s
}
