package clustersim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
)

// Two raft peers in this process, so the race detector sees the daemon's
// goroutines (the other tests run it as separate processes).
func TestInProcessRaftPairUnderRace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := ProfileFor("1.1.6")
	root := t.TempDir()
	dirs := []string{filepath.Join(root, "a"), filepath.Join(root, "b")}
	for _, d := range dirs {
		var out bytes.Buffer
		if code := RunService(ctx, []string{"-c", d, "init", "--randomports", "--consensus", "raft"}, IO{Stdout: &out, Stderr: &out}, p, ""); code != 0 {
			t.Fatalf("init: %s", out.String())
		}
	}
	cfgs := make([]*ServiceConfig, 2)
	ids := make([]Identity, 2)
	for i, d := range dirs {
		var err error
		if cfgs[i], err = LoadServiceConfig(d); err != nil {
			t.Fatal(err)
		}
		if ids[i], err = LoadIdentity(d); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range dirs {
		other := 1 - i
		rewriteRaftPeers(t, d, cfgs[0].Cluster.Secret, cfgs[other].Cluster.ListenMultiaddress[0]+"/p2p/"+ids[other].ID,
			[]string{ids[0].ID, ids[1].ID})
	}
	dctx, stop := context.WithCancel(ctx)
	errs := make(chan error, 2)
	for _, d := range dirs {
		go func() {
			errs <- RunDaemon(dctx, DaemonOptions{Dir: d, Profile: p, LoadDelay: 50 * time.Millisecond, Log: zap.NewNop()})
		}()
	}
	api := func(i int) string {
		a, _ := ParseAddr(cfgs[i].API.RestAPI.HTTPListenMultiaddress)
		return "http://" + a.HostPort()
	}
	c := "bafkreic3j4iknv3blrjuuzwbcuxg67oghg2vuhdfj2flj2c6ghdlktqzby"
	if err := poll(ctx, func() bool {
		resp, err := http.Post(api(0)+"/pins/"+c, "", nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, func() bool {
		resp, err := http.Get(api(1) + "/allocations?filter=all")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte(c))
	}); err != nil {
		t.Fatal(err)
	}
	// A peer with another secret is refused.
	ca, _ := ParseAddr(cfgs[1].Cluster.ListenMultiaddress[0])
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ca.HostPort()+"/_sim/sync", nil)
	req.Header.Set(headerSecret, "not-the-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong secret answered %d", resp.StatusCode)
	}
	stop()
	for range dirs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func rewriteRaftPeers(t *testing.T, dir, secret, other string, peerset []string) {
	t.Helper()
	path := filepath.Join(dir, "service.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["cluster"].(map[string]any)["secret"] = secret
	m["cluster"].(map[string]any)["peer_addresses"] = []string{other}
	m["consensus"].(map[string]any)["raft"].(map[string]any)["init_peerset"] = peerset
	b, _ = json.Marshal(m)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func poll(ctx context.Context, cond func() bool) error {
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition not met: %w", ctx.Err())
		case <-tk.C:
		}
	}
	return nil
}
