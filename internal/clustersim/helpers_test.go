package clustersim_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// fastEnv keeps the traps but shortens them for tests.
var fastEnv = []string{"CLUSTERSIM_LOAD_DELAY=150ms", "CLUSTERSIM_STOP_DELAY=20ms"}

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// start runs one peer daemon, stopped (or killed) when the test ends.
func start(t *testing.T, b simtest.Binaries, p simtest.Peer, env []string, args ...string) *simtest.Process {
	t.Helper()
	pr, err := simtest.Start(b.Service, p, append(append([]string{}, fastEnv...), env...), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-pr.Done():
		default:
			pr.Kill()
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.Dir, pr.Output())
		}
	})
	return pr
}

// startAll starts every peer and waits until each API answers.
func startAll(t *testing.T, b simtest.Binaries, peers []simtest.Peer, env ...string) []*simtest.Process {
	t.Helper()
	prs := make([]*simtest.Process, len(peers))
	for i, p := range peers {
		prs[i] = start(t, b, p, env)
	}
	ctx := testCtx(t, 10*time.Second)
	for _, p := range peers {
		waitAPI(t, ctx, p)
	}
	return prs
}

func waitAPI(t *testing.T, ctx context.Context, p simtest.Peer) {
	t.Helper()
	err := simtest.WaitFor(ctx, "API of "+p.Dir, func() bool {
		code, _, err := simtest.Get(ctx, p.APIURL, "/version")
		return err == nil && code == 200
	})
	if err != nil {
		t.Fatal(err)
	}
}

func stop(t *testing.T, prs ...*simtest.Process) {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	for _, pr := range prs {
		if err := pr.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// waitPins waits until the peer's API shows want pins.
func waitPins(t *testing.T, p simtest.Peer, want int, within time.Duration) {
	t.Helper()
	ctx := testCtx(t, within)
	last := -2
	err := simtest.WaitFor(ctx, "pin count", func() bool {
		last = simtest.PinCount(ctx, p.APIURL)
		return last == want
	})
	if err != nil {
		t.Fatalf("%s: want %d pins, last saw %d: %v", p.Dir, want, last, err)
	}
}

// testCIDs are valid CIDv1 (raw) strings.
var testCIDs = []string{
	"bafkreic3j4iknv3blrjuuzwbcuxg67oghg2vuhdfj2flj2c6ghdlktqzby",
	"bafkreicovxpetycfz3m7bgfs46ijt2emdhpwdoasdq32axydid36rgdpmi",
	"bafkreiccy6pac3amcyow7ztdo62ttelib2zyg534dhhkd5vvvjryij2kae",
	"bafkreianuyqu4x7gt3r5ti565qj6hwpob3ibfknh2kmbz7qnvhiqvrooim",
	"bafkreifrw4caqybi24zmyyw2sltixttwz5fu5lkxqrew6bt7qihdadylpm",
	"bafkreiglhbg23bhog5srjg7zowgsjijcewx23flkdk6yyekgyhcur2x4jy",
}

func pin(t *testing.T, p simtest.Peer, c string) {
	t.Helper()
	code, body, err := simtest.Do(testCtx(t, 5*time.Second), "POST", p.APIURL, "/pins/"+c+"?name=sample")
	if err != nil || code != 200 {
		t.Fatalf("pin %s on %s: %d %s %v", c, p.Dir, code, body, err)
	}
}

// run runs a simulator binary and returns its combined output.
func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t, 20*time.Second), bin, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := run(t, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return out
}

// exportCount runs an offline `state export` and counts its lines.
func exportCount(t *testing.T, b simtest.Binaries, p simtest.Peer) int {
	t.Helper()
	cmd := exec.CommandContext(testCtx(t, 20*time.Second), b.Service, "--config", p.Dir, "state", "export")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("state export of %s: %v", p.Dir, err)
	}
	return simtest.CountObjects(out)
}

// waitReady waits for the daemon to log that its pinset is loaded.
func waitReady(t *testing.T, pr *simtest.Process) {
	t.Helper()
	err := simtest.WaitFor(testCtx(t, 5*time.Second), "READY", func() bool {
		return strings.Contains(pr.Output(), "IPFS Cluster is READY")
	})
	if err != nil {
		t.Fatal(err)
	}
}
