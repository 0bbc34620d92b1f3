package dockerrunner

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/upgraded/upgraded/sidecar"
)

func TestSocketFromHost(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "/var/run/docker.sock",
		"unix:///run/podman/pod.sock": "/run/podman/pod.sock",
		"/var/run/docker.sock":        "/var/run/docker.sock",
		"tcp://127.0.0.1:2375":        "",
	} {
		got, err := SocketFromHost(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("SocketFromHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestDemux(t *testing.T) {
	frame := func(stream byte, s string) []byte {
		h := []byte{stream, 0, 0, 0, 0, 0, 0, byte(len(s))}
		return append(h, s...)
	}
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"framed":  {append(frame(1, "ipfs-cluster-service version "), frame(2, "1.1.6\n")...), "ipfs-cluster-service version 1.1.6\n"},
		"tty":     {[]byte("version 1.0.8\n"), "version 1.0.8\n"},
		"cut off": {append(frame(1, "abc"), 1, 0, 0, 0, 0, 0, 0, 9, 'x'), "abc\x01\x00\x00\x00\x00\x00\x00\tx"},
	}
	for name, tc := range cases {
		if got := demux(tc.in); got != tc.want {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
}

// TestDefinitionLeavesImageDefaultsOut: what the old image supplied (env,
// command, entrypoint, labels) must not be carried into a container of
// another image; what the operator set must be, with anonymous volumes kept by name.
func TestDefinitionLeavesImageDefaultsOut(t *testing.T) {
	raw := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	info := &ContainerInfo{Name: "/peer", Image: "sha256:old",
		Config: map[string]json.RawMessage{
			"Image":      raw("cluster:1.0.8"),
			"Hostname":   raw("abcdef"),
			"Env":        raw([]string{"PATH=/usr/bin", "IPFS_CLUSTER_PATH=/data", "CLUSTER_PEERNAME=a"}),
			"Cmd":        raw([]string{"daemon"}),
			"Entrypoint": raw([]string{"/custom"}),
			"Labels":     raw(map[string]string{"org.opencontainers.image.version": "1.0.8", "role": "peer"}),
			"User":       raw("1000"),
		},
		HostConfig: map[string]json.RawMessage{
			"NetworkMode": raw("host"),
			"Binds":       raw([]string{"/srv/cluster:/data"}),
			"Ulimits":     raw([]map[string]any{{"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 1024}}),
		},
		Mounts: []MountPoint{{Type: "bind", Source: "/srv/cluster", Destination: "/data", RW: true},
			{Type: "volume", Name: "anon123", Destination: "/var/cache", RW: true}},
	}
	img := &ImageInfo{}
	img.Config.Env = []string{"PATH=/usr/bin", "IPFS_CLUSTER_PATH=/data"}
	img.Config.Cmd = []string{"daemon"}
	img.Config.Entrypoint = []string{"/usr/local/bin/entrypoint.sh"}
	img.Config.Labels = map[string]string{"org.opencontainers.image.version": "1.0.8"}
	spec, err := definitionOf(info, img)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(spec)
	var got struct {
		Image, Hostname, User string
		Env, Cmd, Entrypoint  []string
		Labels                map[string]string
		HostConfig            struct {
			NetworkMode string
			Binds       []string
			Ulimits     []struct{ Name string }
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	checks := map[string]bool{
		"image left to the switch":           got.Image == "",
		"hostname left to the engine":        got.Hostname == "",
		"operator's env only":                slices.Equal(got.Env, []string{"CLUSTER_PEERNAME=a"}),
		"image's command left out":           got.Cmd == nil,
		"operator's entrypoint kept":         slices.Equal(got.Entrypoint, []string{"/custom"}),
		"operator's labels only":             len(got.Labels) == 1 && got.Labels["role"] == "peer",
		"user kept":                          got.User == "1000",
		"network mode kept":                  got.HostConfig.NetworkMode == "host",
		"binds kept, anonymous volume named": slices.Equal(got.HostConfig.Binds, []string{"/srv/cluster:/data", "anon123:/var/cache"}),
		"ulimit names creation accepts":      len(got.HostConfig.Ulimits) == 1 && got.HostConfig.Ulimits[0].Name == "nofile",
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("%s: %s", what, b)
		}
	}
}

func TestNewRefusesMissingSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	_, err := New(context.Background(), Config{Engine: NewEngine(sock), Container: "peer", StateDir: t.TempDir(), Logger: zap.NewNop()})
	if err == nil || !strings.Contains(err.Error(), sock) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want an error naming the missing socket, got %v", err)
	}
}

// fakeEngine is a Docker Engine API of one container, on a unix socket,
// enough to prove the runner's switch and rollback bookkeeping.
type fakeEngine struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer // by name
	images     map[string]string         // ref -> ID
	creates    []map[string]any
	failCreate string // image ID whose creation fails
}

type fakeContainer struct {
	id, image string
	running   bool
	spec      map[string]any
}

func startFake(t *testing.T) (*fakeEngine, string) {
	f := &fakeEngine{containers: map[string]*fakeContainer{}, images: map[string]string{
		"cluster:1.0.8": "sha256:aaa", "cluster:1.1.6": "sha256:bbb", "cluster:bad": "sha256:ccc"}}
	sock := filepath.Join(t.TempDir(), "e.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(f.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f, sock
}

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := strings.TrimPrefix(r.URL.Path, "/"+apiVersion)
	parts := strings.Split(strings.Trim(p, "/"), "/")
	notFound := func() { w.WriteHeader(404); _, _ = w.Write([]byte(`{"message":"no such thing"}`)) }
	switch {
	case p == "/_ping":
		_, _ = w.Write([]byte("OK"))
	case parts[0] == "images" && len(parts) >= 3:
		ref := strings.Join(parts[1:len(parts)-1], "/")
		id, ok := f.images[ref]
		if !ok {
			for _, v := range f.images {
				if v == ref {
					id, ok = v, true
				}
			}
		}
		if !ok {
			notFound()
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"Id": id, "Config": map[string]any{"Cmd": []string{"daemon"}}})
	case p == "/containers/create":
		var spec map[string]any
		_ = json.NewDecoder(r.Body).Decode(&spec)
		name := r.URL.Query().Get("name")
		img := spec["Image"].(string)
		if img == f.failCreate {
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"message":"cannot create"}`))
			return
		}
		if _, ok := f.containers[name]; ok {
			w.WriteHeader(409)
			return
		}
		f.creates = append(f.creates, spec)
		f.containers[name] = &fakeContainer{id: name + "-" + img, image: img, spec: spec}
		_ = json.NewEncoder(w).Encode(map[string]string{"Id": name})
	case parts[0] == "containers" && len(parts) >= 2:
		c := f.find(parts[1])
		if c == nil {
			notFound()
			return
		}
		switch {
		case r.Method == http.MethodDelete:
			for n, x := range f.containers {
				if x == c {
					delete(f.containers, n)
				}
			}
		case parts[2] == "json":
			cfg := map[string]any{"Image": "x", "Env": c.spec["Env"], "Labels": c.spec["Labels"], "Cmd": c.spec["Cmd"]}
			_ = json.NewEncoder(w).Encode(map[string]any{"Id": c.id, "Image": c.image, "State": map[string]any{"Running": c.running, "Pid": 42},
				"Config": cfg, "HostConfig": c.spec["HostConfig"]})
		case parts[2] == "start":
			c.running = true
		case parts[2] == "stop":
			c.running = false
		}
	default:
		notFound()
	}
}

func (f *fakeEngine) find(idOrName string) *fakeContainer {
	if c, ok := f.containers[idOrName]; ok {
		return c
	}
	for _, c := range f.containers {
		if c.id == idOrName {
			return c
		}
	}
	return nil
}

func (f *fakeEngine) container(name string) (fakeContainer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[name]
	if !ok {
		return fakeContainer{}, false
	}
	return *c, true
}

// TestSwitchFollowsCurrentVersionAndRollsBack: Start moves the container to
// the image of the current version with the operator's settings, keeps the
// old definition, goes back to it, and carries extra arguments for one start only.
func TestSwitchFollowsCurrentVersionAndRollsBack(t *testing.T) {
	f, sock := startFake(t)
	f.containers["peer"] = &fakeContainer{id: "peer-0", image: "sha256:aaa", running: true,
		spec: map[string]any{"Env": []string{"A=1"}, "Labels": map[string]string{"role": "peer"},
			"HostConfig": map[string]any{"NetworkMode": "host", "Binds": []string{"/srv:/srv"}}}}
	version := "1.0.8"
	dir := t.TempDir()
	ctx := context.Background()
	r, err := New(ctx, Config{Engine: NewEngine(sock), Container: "peer", StateDir: dir, Logger: zap.NewNop(),
		Version: func() (string, error) { return version, nil }})
	if err != nil {
		t.Fatal(err)
	}
	for v, ref := range map[string]string{"1.0.8": "cluster:1.0.8", "1.1.6": "cluster:1.1.6"} {
		if err := r.recordImage(v, imageRecord{Ref: ref, ID: f.images[ref]}); err != nil {
			t.Fatal(err)
		}
	}
	step := func(what string, opts sidecar.StartOptions, wantImage string, wantCmd []string) {
		t.Helper()
		if err := r.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.Stop(ctx); err != nil { // stopping a stopped peer is a no-op
			t.Fatal(err)
		}
		if err := r.Start(ctx, opts); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		c, ok := f.container("peer")
		if !ok || c.image != wantImage || !c.running {
			t.Fatalf("%s: container %+v, want running image %s", what, c, wantImage)
		}
		b, _ := json.Marshal(c.spec)
		var got struct {
			Env        []string
			Cmd        []string
			HostConfig struct{ Binds []string }
		}
		_ = json.Unmarshal(b, &got)
		if !slices.Equal(got.Env, []string{"A=1"}) || !slices.Equal(got.HostConfig.Binds, []string{"/srv:/srv"}) || !slices.Equal(got.Cmd, wantCmd) {
			t.Fatalf("%s: definition not kept: %s", what, b)
		}
	}
	step("same version: nothing recreated", sidecar.StartOptions{}, "sha256:aaa", nil)
	if len(f.creates) != 0 {
		t.Fatalf("a start on the same image recreated the container: %v", f.creates)
	}
	version = "1.1.6"
	step("upgrade", sidecar.StartOptions{}, "sha256:bbb", nil)
	if prev, _ := r.PreviousImage(); prev != "sha256:aaa" {
		t.Fatalf("previous definition should hold the old image, got %q", prev)
	}
	step("one start with extra arguments", sidecar.StartOptions{ExtraArgs: []string{"--upgrade"}}, "sha256:bbb", []string{"daemon", "--upgrade"})
	step("next start the ordinary way", sidecar.StartOptions{}, "sha256:bbb", nil)
	version = "1.0.8"
	step("rollback", sidecar.StartOptions{}, "sha256:aaa", nil)

	// A target that cannot be created leaves the old container in place.
	f.failCreate = "sha256:ccc"
	if err := r.recordImage("9.9.9", imageRecord{Ref: "cluster:bad", ID: "sha256:ccc"}); err != nil {
		t.Fatal(err)
	}
	version = "9.9.9"
	if err := r.Start(ctx, sidecar.StartOptions{}); err == nil || !strings.Contains(err.Error(), "old container was put back") {
		t.Fatalf("want the failed switch reported with the old container back, got %v", err)
	}
	if c, ok := f.container("peer"); !ok || c.image != "sha256:aaa" {
		t.Fatalf("old container not put back: %+v", c)
	}
	st, err := r.Status(ctx)
	if err != nil || st.Running {
		t.Fatalf("status after a failed switch: %+v %v", st, err)
	}
}
