// Package simtest builds the cluster-peer simulator's binaries and sets up
// clusters of them, for tests of other packages, end-to-end tests and the
// demo.
package simtest

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// BuildSpec selects a simulated release and an optional fault.
type BuildSpec struct{ Version, Fault string }

// Binaries are built simulator executables of one release.
type Binaries struct{ Service, Ctl, Version string }

// Artifact is a written release archive.
type Artifact struct{ Path, SHA256 string }

const pkgPath = "github.com/upgraded/upgraded/internal/clustersim"

// Build compiles both binaries for spec into outDir/<version>[-fault]/,
// reusing a previous build of the same spec there.
func Build(ctx context.Context, outDir string, spec BuildSpec) (Binaries, error) {
	if spec.Version == "" {
		spec.Version = "1.1.6"
	}
	name := spec.Version
	if spec.Fault != "" {
		name += "-" + spec.Fault
	}
	dir := filepath.Join(outDir, name)
	b := Binaries{
		Service: filepath.Join(dir, "ipfs-cluster-service"),
		Ctl:     filepath.Join(dir, "ipfs-cluster-ctl"),
		Version: spec.Version,
	}
	if isFile(b.Service) && isFile(b.Ctl) {
		return b, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return b, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return b, fmt.Errorf("creating build folder: %w", err)
	}
	ldflags := fmt.Sprintf("-X %s.Version=%s -X %s.Fault=%s", pkgPath, spec.Version, pkgPath, spec.Fault)
	for cmd, out := range map[string]string{"ipfs-cluster-service": b.Service, "ipfs-cluster-ctl": b.Ctl} {
		if err := goBuild(ctx, root, ldflags, "./internal/clustersim/cmd/"+cmd, out); err != nil {
			return b, err
		}
	}
	return b, nil
}

// goBuild builds into a temp name then renames, so that a concurrent or
// interrupted build never leaves a half-written binary under the final name.
func goBuild(ctx context.Context, root, ldflags, pkg, out string) error {
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".building*")
	if err != nil {
		return fmt.Errorf("building %s: %w", pkg, err)
	}
	tmp := f.Name()
	f.Close()
	cmd := exec.CommandContext(ctx, goTool(), "build", "-ldflags", ldflags, "-o", tmp, pkg)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("building %s: %w: %s", pkg, err, msg)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("installing %s: %w", out, err)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "/usr/local/go/bin/go"
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// moduleRoot finds the module source: from this file's location, else from
// `go env GOMOD` in the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
		if isFile(filepath.Join(root, "go.mod")) {
			return root, nil
		}
	}
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("finding the module root: not inside the upgraded module")
	}
	return filepath.Dir(gomod), nil
}

// ReleaseTarballs writes archives shaped like the real dist ones:
// ipfs-cluster-service_v<V>_<os>-<arch>.tar.gz holding
// ipfs-cluster-service/ipfs-cluster-service, and the same for ctl.
func ReleaseTarballs(b Binaries, outDir string) ([]Artifact, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating release folder: %w", err)
	}
	var out []Artifact
	for _, bin := range []struct{ name, path string }{
		{"ipfs-cluster-service", b.Service}, {"ipfs-cluster-ctl", b.Ctl},
	} {
		path := filepath.Join(outDir, fmt.Sprintf("%s_v%s_%s-%s.tar.gz", bin.name, b.Version, runtime.GOOS, runtime.GOARCH))
		sum, err := writeTarball(path, bin.name, bin.path)
		if err != nil {
			return nil, fmt.Errorf("writing release tarball %s: %w", path, err)
		}
		out = append(out, Artifact{Path: path, SHA256: sum})
	}
	return out, nil
}

func writeTarball(path, name, bin string) (string, error) {
	src, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return "", err
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	gz := gzip.NewWriter(io.MultiWriter(f, h))
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: st.ModTime()}); err != nil {
		return "", err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name + "/" + name, Mode: 0o755, Size: st.Size(), ModTime: st.ModTime()}); err != nil {
		return "", err
	}
	if _, err := io.Copy(tw, src); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
