package dockertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/systemdtest"
)

// lab is the engine plus everything one run built on it, removed at the end.
type lab struct {
	e        *systemdtest.Engine
	run      string // label value of every container of this run
	socket   string // the engine's socket on this host
	root     string // module root
	work     string
	buildDir string // simulator builds
	images   []string
	upgraded string // the image of upgraded
	bin      string // upgraded built for this host (the CLI)
}

const label = "upgraded.dockertest"

func moduleRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("finding the module root: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func newLab(t *testing.T, ctx context.Context) *lab {
	root := moduleRoot(t)
	e, err := systemdtest.StartEngine(ctx, filepath.Join(root, "..", "shared", "tools"))
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{e: e, run: fmt.Sprint(os.Getpid()), root: root, work: t.TempDir()}
	l.buildDir = filepath.Join(l.work, "build")
	host, err := e.Run(ctx, nil, "sh", "-c", "echo $DOCKER_HOST")
	if err != nil {
		t.Fatal(err)
	}
	if l.socket = strings.TrimPrefix(strings.TrimSpace(host), "unix://"); l.socket == "" {
		t.Fatal("the container engine tool gave no DOCKER_HOST")
	}
	t.Cleanup(l.cleanup)
	return l
}

// cleanup removes every container of the run, then every image it built.
func (l *lab) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _ := l.e.Run(ctx, nil, "podman", "ps", "-aq", "--filter", "label="+label+"="+l.run)
	if ids := strings.Fields(out); len(ids) > 0 {
		_, _ = l.e.Run(ctx, nil, "podman", append([]string{"rm", "-f", "-t", "2"}, ids...)...)
	}
	// Version checks are removed by the runner; a killed run may leave some.
	out, _ = l.e.Run(ctx, nil, "podman", "ps", "-aq", "--filter", "label=upgraded.role=version-check")
	if ids := strings.Fields(out); len(ids) > 0 {
		_, _ = l.e.Run(ctx, nil, "podman", append([]string{"rm", "-f"}, ids...)...)
	}
	if len(l.images) > 0 {
		_, _ = l.e.Run(ctx, nil, "podman", append([]string{"rmi", "-f"}, l.images...)...)
	}
}

func (l *lab) podman(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := l.e.Run(ctx, nil, "podman", args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// buildUpgraded builds packaging/Dockerfile. Its build stage runs on a Go
// image made here from this machine's Go (no registry), with the module and
// build caches mounted so it compiles offline and quickly.
func (l *lab) buildUpgraded(t *testing.T, ctx context.Context) {
	goImage := "localhost/upgraded-test-go:" + l.run
	skel := filepath.Join(l.work, "go-image")
	for _, d := range []string{"tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(skel, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(skel, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	goroot := strings.TrimSpace(run(t, ctx, "go", "env", "GOROOT"))
	modCache := strings.TrimSpace(run(t, ctx, "go", "env", "GOMODCACHE"))
	buildCache := strings.TrimSpace(run(t, ctx, "go", "env", "GOCACHE"))
	l.images = append(l.images, goImage)
	script := fmt.Sprintf("tar -cf - -C / %s -C %s tmp root | podman import"+
		" --change 'ENV=PATH=%s/bin:/usr/bin:/bin' --change ENV=HOME=/root --change ENV=GOPATH=/go"+
		" --change ENV=GOPROXY=off --change ENV=GOTOOLCHAIN=local --change ENV=GOFLAGS=-mod=mod - %s",
		strings.TrimPrefix(goroot, "/"), skel, goroot, goImage)
	if _, err := l.e.Run(ctx, nil, "bash", "-c", script); err != nil {
		t.Fatalf("making the Go build image: %v", err)
	}
	l.upgraded = "localhost/upgraded:test-" + l.run
	l.images = append(l.images, l.upgraded)
	begin := time.Now()
	l.podman(t, ctx, "build", "-q", "--layers=false", "-f", filepath.Join(l.root, "packaging", "Dockerfile"),
		"--ignorefile", filepath.Join(l.root, "packaging", "Dockerfile.dockerignore"),
		"--build-arg", "GO_IMAGE="+goImage, "-v", modCache+":/go/pkg/mod:ro", "-v", buildCache+":/root/.cache/go-build",
		"-t", l.upgraded, l.root)
	t.Logf("image of upgraded built in %s", time.Since(begin).Round(time.Second))
	l.bin = filepath.Join(l.work, "upgraded")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", l.bin, "./cmd/upgraded")
	cmd.Dir = l.root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building upgraded: %v\n%s", err, out)
	}
}

// clusterImage builds a FROM-scratch image of the simulator release spec
// (static binaries: CGO_ENABLED=0 is set by the test) tagged tag.
func (l *lab) clusterImage(t *testing.T, ctx context.Context, spec simtest.BuildSpec, tag string) (ref, id string) {
	b, err := simtest.Build(ctx, l.buildDir, spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(l.work, "image-"+tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{b.Service: "ipfs-cluster-service", b.Ctl: "ipfs-cluster-ctl"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	df := "FROM scratch\nCOPY ipfs-cluster-service ipfs-cluster-ctl /usr/local/bin/\n" +
		"LABEL org.opencontainers.image.version=" + tag + "\n" +
		"ENTRYPOINT [\"/usr/local/bin/ipfs-cluster-service\"]\nCMD [\"daemon\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ref = "localhost/upgraded-test-cluster:" + tag + "-" + l.run
	l.images = append(l.images, ref)
	l.podman(t, ctx, "build", "-q", "--layers=false", "-t", ref, dir)
	id = l.podman(t, ctx, "image", "inspect", "--format", "{{.Id}}", ref)
	return ref, strings.TrimPrefix(id, "sha256:")
}

func (l *lab) containerID(t *testing.T, ctx context.Context, name string) string {
	return l.podman(t, ctx, "inspect", "--format", "{{.Id}}", name)
}

func run(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}
