package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/harness"
)

// TestNothingRunsBeforeItsChecksumMatches: an artifact that leaves a mark
// when it is executed is announced with a wrong sha256, then with its own.
// The first plan must fail with no mark; the second proves the mark would
// have shown (the daemon runs a staged binary's --version).
func TestNothingRunsBeforeItsChecksumMatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root := t.TempDir()
	c, err := harness.Setup(ctx, harness.Options{Root: root, Peers: 1, From: simtest.BuildSpec{Version: env.From},
		UpgradedBin: env.UpgradedBin, BuildDir: env.BuildDir, Tune: tune})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(root, "executed")
	art := filepath.Join(root, "release", "ipfs-cluster-service")
	if err := os.MkdirAll(filepath.Dir(art), 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\ntouch %s\necho 'ipfs-cluster-service version 9.9.8' # not the target: the plan fails before anything stops\n", mark)
	if err := os.WriteFile(art, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(script))
	good := hex.EncodeToString(sum[:])
	bad := strings.Repeat("0", 64)

	for _, tc := range []struct {
		sha256   string
		executed bool
	}{{bad, false}, {good, true}} {
		id, err := c.Announce(ctx, 0, []string{"--version", "9.9.9", "--artifact", art, "--sha256", tc.sha256})
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.WaitPlan(ctx, 0, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Phase != plan.PhaseFailed {
			t.Fatalf("sha256 %s…: plan ended %s (%s), want it refused", tc.sha256[:8], p.Phase, p.Reason)
		}
		_, err = os.Stat(mark)
		if executed := err == nil; executed != tc.executed {
			t.Fatalf("sha256 %s…: artifact executed = %v, want %v (plan %s: %s)", tc.sha256[:8], executed, tc.executed, p.Phase, p.Reason)
		}
	}
}
