package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/sidecar/binstore"
	"github.com/upgraded/upgraded/sidecar/stage"
)

// fakeImages stands for the docker runner: each image holds a service
// binary that is a script naming its version.
type fakeImages struct {
	running string
	images  map[string]string // ref -> version
	calls   []string
}

func (f *fakeImages) write(dir, version string) (stage.Binaries, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return stage.Binaries{}, err
	}
	p := filepath.Join(dir, stage.ServiceName)
	return stage.Binaries{Service: p}, os.WriteFile(p, []byte("#!/bin/sh\necho version "+version+"\n"), 0o755)
}

func (f *fakeImages) StageImage(_ context.Context, ref, sha, version, dir string) (stage.Binaries, error) {
	f.calls = append(f.calls, ref+" "+sha)
	if v, ok := f.images[ref]; !ok || v != version {
		return stage.Binaries{}, errors.New("image " + ref + " is not " + version)
	}
	return f.write(dir, version)
}

func (f *fakeImages) StageRunning(_ context.Context, dir string) (string, stage.Binaries, error) {
	b, err := f.write(dir, f.running)
	return f.running, b, err
}

func TestStageImage(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	cases := []struct {
		name      string
		artifacts []plan.Artifact
		wantErr   string
	}{
		{"no image artifact", []plan.Artifact{{Source: "https://x/ipfs-cluster-service.tar.gz", SHA256: sha}}, "exactly one artifact docker-image:"},
		{"two images", []plan.Artifact{{Source: "docker-image:c:1.1.6", SHA256: sha}, {Source: "docker-image:c:1.1.7", SHA256: sha}}, "exactly one"},
		{"image of another version", []plan.Artifact{{Source: "docker-image:c:1.0.8", SHA256: sha}}, "is not 1.1.6"},
		{"target image", []plan.Artifact{{Source: "docker-image:c:1.1.6", SHA256: sha}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bins, err := binstore.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			imgs := &fakeImages{running: "1.0.8", images: map[string]string{"c:1.1.6": "1.1.6", "c:1.0.8": "1.0.8"}}
			a := &Agent{cfg: Config{Bins: bins, StagingDir: t.TempDir(), Images: imgs}, log: zap.NewNop()}
			err = a.stage(context.Background(), &plan.Plan{Announcement: plan.Announcement{ID: "p1", Version: "1.1.6", Artifacts: tc.artifacts}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error with %q, got %v", tc.wantErr, err)
				}
				if bins.Has("1.1.6") {
					t.Fatal("a refused image must not be installed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs.calls) != 1 || imgs.calls[0] != "c:1.1.6 "+sha {
				t.Fatalf("image checked with %v, want the reference without its scheme and the sha256", imgs.calls)
			}
			if cur, err := bins.Current(); err != nil || cur != "1.0.8" || !bins.Has("1.1.6") {
				t.Fatalf("want 1.0.8 current (the running image) and 1.1.6 installed; current %q %v", cur, err)
			}
			if err := stage.VerifyVersion(context.Background(), bins.ServicePathFor("1.1.6"), "1.1.6"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
