package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/upgraded/upgraded/internal/config"
)

// runCLI runs the command line args in this process and returns its output.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := rootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// clusterFolder is a cluster peer's config folder holding a real 1.1.6
// service.json (its secret, left out of the sample, filled in).
func clusterFolder(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "samples", "1.1.6-crdt", "service.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["cluster"].(map[string]any)["secret"] = strings.Repeat("ab", 32)
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "service.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// emptyPath leaves no ipfs-cluster-service to find in $PATH.
func emptyPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
}

func TestInitDockerNeedsNoHostBinary(t *testing.T) {
	emptyPath(t)
	cluster := clusterFolder(t)
	dir := filepath.Join(t.TempDir(), "upgraded")
	out, err := runCLI(t, "init", "--config", dir, "--cluster-config", cluster, "--runner", "docker",
		"--docker-socket", "unix:///run/podman/podman.sock", "--container", "cluster0")
	if err != nil {
		t.Fatalf("init --runner docker without binaries: %v\n%s", err, out)
	}
	if !strings.Contains(out, "peer in container cluster0") {
		t.Errorf("init printed %q", out)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Runner.Docker
	if cfg.Runner.Type != config.RunnerDocker || d.Socket != "unix:///run/podman/podman.sock" || d.Container != "cluster0" {
		t.Errorf("saved runner %+v", cfg.Runner)
	}
	if _, err := os.Stat(cfg.IdentityFile()); err != nil {
		t.Errorf("no identity written: %v", err)
	}
	// Nothing imported: the daemon keeps the running image's binaries at the first plan.
	if entries, err := os.ReadDir(filepath.Join(cfg.BinDir(), "versions")); err == nil && len(entries) > 0 {
		t.Errorf("binaries imported for the docker runner: %v", entries)
	}
}

func TestInitDockerDefaults(t *testing.T) {
	emptyPath(t)
	dir := filepath.Join(t.TempDir(), "upgraded")
	if out, err := runCLI(t, "init", "--config", dir, "--cluster-config", clusterFolder(t), "--runner", "docker"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Runner.Docker; d.Socket != "unix:///var/run/docker.sock" || d.Container != "ipfs-cluster" {
		t.Errorf("defaults not kept: %+v", d)
	}
}

func TestInitRefusesBadInputAndWritesNothing(t *testing.T) {
	emptyPath(t)
	cluster := clusterFolder(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"exec runner without a binary", nil, "--service-bin PATH is required with the exec runner"},
		{"systemd runner without a binary", []string{"--runner", "systemd"}, "--service-bin PATH is required with the systemd runner"},
		{"container name for the exec runner", []string{"--container", "x"}, "--container is for --runner docker"},
		{"socket for the systemd runner", []string{"--runner", "systemd", "--docker-socket", "unix:///x.sock"}, "--docker-socket is for --runner docker"},
		{"socket that is not a unix socket", []string{"--runner", "docker", "--docker-socket", "tcp://127.0.0.1:2375"}, "want a unix socket"},
		{"ctl binary alone for docker", []string{"--runner", "docker", "--ctl-bin", "/bin/true"}, "--ctl-bin needs --service-bin"},
		{"missing service binary file", []string{"--service-bin", "/nonexistent/ipfs-cluster-service"}, "/nonexistent/ipfs-cluster-service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "upgraded")
			out, err := runCLI(t, append([]string{"init", "--config", dir, "--cluster-config", cluster}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("init %v: error %v, want one saying %q\n%s", tc.args, err, tc.want, out)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused init created %s: %v", dir, err)
			}
		})
	}
}

// The exec runner still imports the binary it is given.
func TestInitExecImportsTheBinary(t *testing.T) {
	emptyPath(t)
	bin := filepath.Join(t.TempDir(), "ipfs-cluster-service")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'ipfs-cluster-service version 1.1.6'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "upgraded")
	out, err := runCLI(t, "init", "--config", dir, "--cluster-config", clusterFolder(t), "--service-bin", bin)
	if err != nil || !strings.Contains(out, "cluster peer binaries 1.1.6") {
		t.Fatalf("init with --service-bin: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "bin", "current", "ipfs-cluster-service")); err != nil {
		t.Fatalf("binary not imported as current: %v", err)
	}
}
