package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/upgraded/upgraded/sidecar/cluster"
)

// probeRPC learns the cluster RPC protocol a staged binary speaks by running
// it briefly as a peer of its own: `init --randomports` in a throwaway config
// folder, `daemon`, read GET /id, stop. Nothing of the real peer is touched.
func (a *Agent) probeRPC(ctx context.Context, servicePath, stagingDir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := os.MkdirAll(stagingDir, 0o700); err != nil {
		return "", fmt.Errorf("creating staging folder: %w", err)
	}
	dir, err := os.MkdirTemp(stagingDir, "rpc-probe-")
	if err != nil {
		return "", fmt.Errorf("creating the probe's config folder: %w", err)
	}
	defer os.RemoveAll(dir)
	initCmd := exec.CommandContext(ctx, servicePath, "--config", dir, "init", "--randomports", "-f")
	initCmd.Env = append(os.Environ(), a.cfg.BinaryEnv...)
	if out, err := initCmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initialising a throwaway peer: %w: %s", err, lastLines(out))
	}
	svc, err := cluster.LoadServiceConfig(dir)
	if err != nil {
		return "", fmt.Errorf("reading the throwaway peer's config: %w", err)
	}
	url, err := cluster.APIURL(svc.APIAddr)
	if err != nil {
		return "", err
	}
	daemon := exec.Command(servicePath, "--config", dir, "daemon")
	daemon.Env = append(os.Environ(), a.cfg.BinaryEnv...)
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		return "", fmt.Errorf("starting a throwaway peer: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = daemon.Wait(); close(exited) }()
	defer func() {
		_ = syscall.Kill(-daemon.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()
	api := cluster.NewClient(url)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if id, err := api.ID(ctx); err == nil && id.RPCProtocolVersion != "" {
			return id.RPCProtocolVersion, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the throwaway peer never told its RPC protocol: %w", ctx.Err())
		case <-exited:
			return "", fmt.Errorf("the throwaway peer exited before answering")
		case <-tick.C:
		}
	}
}

func lastLines(b []byte) string {
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return string(b)
}
