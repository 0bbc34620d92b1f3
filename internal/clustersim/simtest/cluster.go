package simtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Peer is one initialised simulator peer.
type Peer struct {
	Dir         string
	PeerID      string
	APIAddr     string // REST API multiaddr
	APIURL      string // http://127.0.0.1:port
	ClusterAddr string // full /p2p cluster multiaddr
}

// InitCluster runs `init --randomports` for n peers under root/peerN, then
// wires them into one cluster: same secret, peer_addresses of the others,
// init_peerset (raft) and peerstore.
func InitCluster(ctx context.Context, root string, n int, consensus string, bins Binaries) ([]Peer, error) {
	peers := make([]Peer, n)
	cfgs := make([]map[string]any, n)
	used := map[int]bool{}
	for i := range peers {
		dir := filepath.Join(root, fmt.Sprintf("peer%d", i))
		// Each init finds its random ports free, but not the ports another
		// peer was given and has not bound yet: at 50 peers (250 ports drawn
		// from 22,000) two peers sharing a port is likelier than not, and the
		// one that restarts second cannot start. Draw again on a collision.
		for try := 0; ; try++ {
			cmd := exec.CommandContext(ctx, bins.Service, "--config", dir, "init", "--randomports", "--consensus", consensus, "-f")
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("init of %s: %w: %s", dir, err, out)
			}
			p, cfg, err := readPeer(dir)
			if err != nil {
				return nil, err
			}
			ports := randomPorts(cfg)
			clash := false
			for _, port := range ports {
				clash = clash || used[port]
			}
			if clash && try < 20 {
				continue
			}
			if clash {
				return nil, fmt.Errorf("init of %s: no ports apart from the other peers' after %d tries", dir, try+1)
			}
			for _, port := range ports {
				used[port] = true
			}
			peers[i], cfgs[i] = p, cfg
			break
		}
	}
	secret := cfgs[0]["cluster"].(map[string]any)["secret"]
	for i := range peers {
		others, ids := []string{}, []string{}
		for j, q := range peers {
			ids = append(ids, q.PeerID)
			if j != i {
				others = append(others, q.ClusterAddr)
			}
		}
		cluster := cfgs[i]["cluster"].(map[string]any)
		cluster["secret"] = secret
		cluster["peer_addresses"] = others
		if raft, ok := cfgs[i]["consensus"].(map[string]any)["raft"].(map[string]any); ok {
			raft["init_peerset"] = ids
		}
		if err := writeJSON(filepath.Join(peers[i].Dir, "service.json"), cfgs[i]); err != nil {
			return nil, err
		}
		ps := strings.Join(others, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(peers[i].Dir, "peerstore"), []byte(ps), 0o644); err != nil {
			return nil, fmt.Errorf("writing peerstore: %w", err)
		}
	}
	return peers, nil
}

// randomPorts lists the ports of a config drawn by --randomports (from 10000
// up; the fixed defaults such as the IPFS node's 5001 are the same in every
// peer's config and bound by none).
func randomPorts(v any) []int {
	var out []int
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			out = append(out, randomPorts(e)...)
		}
	case []any:
		for _, e := range x {
			out = append(out, randomPorts(e)...)
		}
	case string:
		if i := strings.Index(x, "/tcp/"); i >= 0 {
			rest := x[i+len("/tcp/"):]
			if j := strings.IndexByte(rest, '/'); j >= 0 {
				rest = rest[:j]
			}
			if port, err := strconv.Atoi(rest); err == nil && port >= 10000 {
				out = append(out, port)
			}
		}
	}
	return out
}

// EditConfig changes a peer's service.json through edit.
func EditConfig(p Peer, edit func(cfg map[string]any)) error {
	_, cfg, err := readPeer(p.Dir)
	if err != nil {
		return err
	}
	edit(cfg)
	return writeJSON(filepath.Join(p.Dir, "service.json"), cfg)
}

func readPeer(dir string) (Peer, map[string]any, error) {
	var id struct {
		ID string `json:"id"`
	}
	if err := readJSON(filepath.Join(dir, "identity.json"), &id); err != nil {
		return Peer{}, nil, err
	}
	var cfg map[string]any
	if err := readJSON(filepath.Join(dir, "service.json"), &cfg); err != nil {
		return Peer{}, nil, err
	}
	api := cfg["api"].(map[string]any)["restapi"].(map[string]any)["http_listen_multiaddress"].(string)
	listen := cfg["cluster"].(map[string]any)["listen_multiaddress"].([]any)[0].(string)
	return Peer{
		Dir: dir, PeerID: id.ID, APIAddr: api,
		APIURL:      "http://127.0.0.1:" + api[strings.LastIndex(api, "/")+1:],
		ClusterAddr: listen + "/p2p/" + id.ID,
	}, cfg, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("rendering %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// Process is a running `ipfs-cluster-service daemon`.
type Process struct {
	Peer Peer
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// syncBuffer collects a child's output safely for concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs the peer's daemon with extra args and environment (KEY=VALUE).
// The caller owns the process and must Stop or Kill it.
func Start(bin string, p Peer, env []string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, append([]string{"--config", p.Dir, "daemon"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	pr := &Process{Peer: p, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = pr.out, pr.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	return pr, nil
}

// Output is what the daemon printed so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode is the exit code once Done (-1 if killed by a signal).
func (p *Process) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// Wait waits for the process to exit or ctx to end.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal sends sig to the daemon.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM and waits for the exit (killing it when ctx ends).
func (p *Process) Stop(ctx context.Context) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(ctx); errors.Is(err, ctx.Err()) && ctx.Err() != nil {
		p.Kill()
		return fmt.Errorf("peer %s did not stop: %w", p.Peer.Dir, err)
	} else if err != nil {
		return fmt.Errorf("peer %s exited badly: %w\n%s", p.Peer.Dir, err, p.Output())
	}
	return nil
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// WaitFor polls cond every 50ms until it holds or ctx ends.
func WaitFor(ctx context.Context, what string, cond func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Get fetches apiURL+path and returns the status and body.
func Get(ctx context.Context, apiURL, path string) (int, []byte, error) {
	return Do(ctx, http.MethodGet, apiURL, path)
}

// Do sends a body-less request to the REST API.
func Do(ctx context.Context, method, apiURL, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, apiURL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// PinCount counts the pins GET /allocations?filter=all shows (either form);
// -1 when the API does not answer.
func PinCount(ctx context.Context, apiURL string) int {
	code, b, err := Get(ctx, apiURL, "/allocations?filter=all")
	if err != nil || code != http.StatusOK {
		return -1
	}
	return CountObjects(b)
}

// CountObjects counts the objects of an ndjson stream or a JSON array.
func CountObjects(b []byte) int {
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("[")) {
		var arr []json.RawMessage
		if json.Unmarshal(b, &arr) != nil {
			return -1
		}
		return len(arr)
	}
	n := 0
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return -1
		}
		n++
	}
	return n
}
