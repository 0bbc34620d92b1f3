package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// release writes a service binary artifact that reports version and carries
// a build tag, so two builds of one version differ in their bytes.
func release(t *testing.T, version, build string) plan.Artifact {
	t.Helper()
	dir := filepath.Join(t.TempDir(), build)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	body := []byte("#!/bin/sh\n# build " + build + "\necho ipfs-cluster-service version " + version + "\n")
	p := filepath.Join(dir, stage.ServiceName)
	if err := os.WriteFile(p, body, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	return plan.Artifact{Source: p, SHA256: hex.EncodeToString(sum[:])}
}

func installedBuild(t *testing.T, bins *binstore.Store, version string) string {
	t.Helper()
	data, err := os.ReadFile(bins.ServicePathFor(version))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(data), "# build ")
	build, _, _ := strings.Cut(rest, "\n")
	return build
}

// A version already installed is reused only when the plan announced the very
// artifacts it came from; other bytes under the same number are fetched and
// replace it, unless the peer runs that version.
func TestStageReusesAVersionOnlyFromTheSameArtifacts(t *testing.T) {
	ctx := context.Background()
	bins, err := binstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := release(t, "1.0.8", "old")
	if err := bins.Import("1.0.8", old.Source, ""); err != nil {
		t.Fatal(err)
	}
	if err := bins.Activate("1.0.8"); err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{Bins: bins, StagingDir: t.TempDir()}, log: zap.NewNop()}
	stageWith := func(id, version string, art plan.Artifact) error {
		return a.stage(ctx, &plan.Plan{Announcement: plan.Announcement{ID: id, Version: version, Artifacts: []plan.Artifact{art}}})
	}

	failing := release(t, "1.1.6", "failing")
	if err := stageWith("p1", "1.1.6", failing); err != nil {
		t.Fatal(err)
	}
	if got := installedBuild(t, bins, "1.1.6"); got != "failing" {
		t.Fatalf("installed build %q, want failing", got)
	}

	// The same artifacts again: reused without fetching (the source is gone).
	if err := os.Remove(failing.Source); err != nil {
		t.Fatal(err)
	}
	if err := stageWith("p2", "1.1.6", failing); err != nil {
		t.Fatalf("restaging the same artifacts should reuse the installed copy: %v", err)
	}

	// A fixed build of the same version: fetched, and it replaces the old bytes.
	fixed := release(t, "1.1.6", "fixed")
	if err := stageWith("p3", "1.1.6", fixed); err != nil {
		t.Fatal(err)
	}
	if got := installedBuild(t, bins, "1.1.6"); got != "fixed" {
		t.Fatalf("after a plan announcing the fixed build, installed build is %q", got)
	}
	if origin, err := bins.Origin("1.1.6"); err != nil || len(origin) != 1 || origin[0] != fixed.SHA256 {
		t.Fatalf("origin %v %v, want the fixed build's sha256", origin, err)
	}

	// Another build of the running version is refused; the running bytes stay.
	other := release(t, "1.0.8", "other")
	err = stageWith("p4", "1.0.8", other)
	if err == nil || !strings.Contains(err.Error(), "current version") {
		t.Fatalf("want a refusal to rewrite the running version, got %v", err)
	}
	if got := installedBuild(t, bins, "1.0.8"); got != "old" {
		t.Fatalf("running version's bytes changed to build %q", got)
	}

	// A wrong sha256 changes nothing.
	bad := release(t, "1.1.6", "bad")
	bad.SHA256 = strings.Repeat("0", 64)
	if err := stageWith("p5", "1.1.6", bad); err == nil {
		t.Fatal("a wrong sha256 was accepted")
	}
	if got := installedBuild(t, bins, "1.1.6"); got != "fixed" {
		t.Fatalf("a refused artifact changed the installed build to %q", got)
	}
}
