package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// TestWatchViewInATerminal renders `upgraded status --watch` in a real
// terminal (tmux) during an upgrade and reads the screen as a person would.
func TestWatchViewInATerminal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, scenario{peers: 3, from: "1.0.8", pins: 5})
	session := fmt.Sprintf("upgraded-watch-%d", os.Getpid())
	cmdline := fmt.Sprintf("%s status --watch --config %s", upgradedBin, c.Hosts[0].ConfigDir)
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", cmdline).CombinedOutput(); err != nil {
		t.Fatalf("starting tmux: %v: %s", err, out)
	}
	defer exec.Command("tmux", "kill-session", "-t", session).Run()
	capture := func() string {
		out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
		return string(out)
	}
	rel, err := c.Release(ctx, simtest.BuildSpec{Version: "1.1.6"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Announce(ctx, 0, rel, "--procedure", "standard")
	if err != nil {
		t.Fatal(err)
	}
	var screens []string
	partial := false
	err = simtest.WaitFor(ctx, "the watch view to show the plan done", func() bool {
		s := capture()
		screens = append(screens, s)
		if strings.Contains(s, "[#") && strings.Contains(s, ".]") {
			partial = true // a bar part way through
		}
		return strings.Contains(s, "DONE") && strings.Count(s, "[######]") == 3
	})
	if err != nil {
		t.Fatalf("%v; last screen:\n%s", err, screens[len(screens)-1])
	}
	last := screens[len(screens)-1]
	for _, want := range []string{"plan " + id, "upgrade to 1.1.6", "verified", "1.1.6", "5 pins", "ok"} {
		if !strings.Contains(last, want) {
			t.Fatalf("watch view lacks %q:\n%s", want, last)
		}
	}
	t.Logf("the watch view at the end:\n%s", last)
	if !partial {
		t.Fatalf("no screen showed a bar part way through; first screens:\n%s", strings.Join(screens[:min(3, len(screens))], "\n----\n"))
	}
}
