package dockerrunner

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// A small client of the Docker Engine API over its unix socket: the dozen
// endpoints the runner needs. Written by hand rather than importing the moby
// client, whose module brings in OpenTelemetry, gRPC and containerd packages
// for what is here a few hundred lines of net/http.

// ErrNotFound is returned when the engine does not know a container or image.
var ErrNotFound = errors.New("not found")

// apiVersion is old enough for every engine in use (Docker 17.06+, podman's
// compatibility API) and has every endpoint used here.
const apiVersion = "v1.41"

// Engine talks to one Docker Engine API socket.
type Engine struct {
	socket string
	hc     *http.Client
}

// SocketFromHost turns a DOCKER_HOST value (unix:///path) or a bare path into
// a socket path; "" gives the engine's usual socket.
func SocketFromHost(host string) (string, error) {
	switch {
	case host == "":
		return "/var/run/docker.sock", nil
	case strings.HasPrefix(host, "unix://"):
		return strings.TrimPrefix(host, "unix://"), nil
	case strings.HasPrefix(host, "/"):
		return host, nil
	}
	return "", fmt.Errorf("docker socket %q: only unix sockets are supported (unix:///path)", host)
}

// NewEngine returns a client of the engine at the unix socket path.
func NewEngine(socket string) *Engine {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4,
	}
	return &Engine{socket: socket, hc: &http.Client{Transport: tr}}
}

// Ping checks that the socket exists, may be used, and answers as an engine.
// Its errors name the socket and the likely cause.
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := os.Stat(e.socket); err != nil {
		return fmt.Errorf("docker socket %s: %w (is the engine running, and the socket mounted into this container?)", e.socket, err)
	}
	resp, err := e.do(ctx, http.MethodGet, "/_ping", nil, nil)
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("docker socket %s: permission denied (run upgraded in the socket's group, e.g. --group-add of its gid): %w", e.socket, err)
		}
		return fmt.Errorf("docker socket %s: %w", e.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("docker socket %s: ping answered %s", e.socket, resp.Status)
	}
	return nil
}

func (e *Engine) do(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding request to %s: %w", path, err)
		}
		rd = bytes.NewReader(b)
	}
	u := "http://docker/" + apiVersion + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.hc.Do(req)
}

// call runs a request and decodes a JSON answer into out (when not nil).
// Answers of 404 give ErrNotFound; other failures carry the engine's message.
func (e *Engine) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := e.do(ctx, method, path, query, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func checkStatus(resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode == http.StatusNotModified {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		msg = m.Message
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, msg)
	}
	return fmt.Errorf("engine answered %s: %s", resp.Status, msg)
}

// ContainerInfo is the part of a container's inspection the runner reads;
// Config and HostConfig are kept whole so a recreation loses nothing.
type ContainerInfo struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	Image string `json:"Image"` // the image ID
	State struct {
		Running    bool   `json:"Running"`
		Pid        int    `json:"Pid"`
		ExitCode   int    `json:"ExitCode"`
		StartedAt  string `json:"StartedAt"`
		FinishedAt string `json:"FinishedAt"`
		Status     string `json:"Status"`
	} `json:"State"`
	RestartCount    int                        `json:"RestartCount"`
	Config          map[string]json.RawMessage `json:"Config"`
	HostConfig      map[string]json.RawMessage `json:"HostConfig"`
	Mounts          []MountPoint               `json:"Mounts"`
	NetworkSettings struct {
		Networks map[string]json.RawMessage `json:"Networks"`
	} `json:"NetworkSettings"`
}

// MountPoint is one mount of a running container.
type MountPoint struct {
	Type        string `json:"Type"`
	Name        string `json:"Name"`
	Source      string `json:"Source"`
	Destination string `json:"Destination"`
	RW          bool   `json:"RW"`
}

// ImageInfo is the part of an image's inspection the runner reads.
type ImageInfo struct {
	ID       string   `json:"Id"`
	RepoTags []string `json:"RepoTags"`
	Config   struct {
		Env        []string          `json:"Env"`
		Cmd        []string          `json:"Cmd"`
		Entrypoint []string          `json:"Entrypoint"`
		Labels     map[string]string `json:"Labels"`
		WorkingDir string            `json:"WorkingDir"`
		User       string            `json:"User"`
	} `json:"Config"`
}

// InspectContainer reads a container by name or ID.
func (e *Engine) InspectContainer(ctx context.Context, name string) (*ContainerInfo, error) {
	var c ContainerInfo
	if err := e.call(ctx, http.MethodGet, "/containers/"+url.PathEscape(name)+"/json", nil, nil, &c); err != nil {
		return nil, fmt.Errorf("inspecting container %s: %w", name, err)
	}
	return &c, nil
}

// InspectImage reads an image by reference or ID.
func (e *Engine) InspectImage(ctx context.Context, ref string) (*ImageInfo, error) {
	var im ImageInfo
	if err := e.call(ctx, http.MethodGet, "/images/"+ref+"/json", nil, nil, &im); err != nil {
		return nil, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	return &im, nil
}

// Pull asks the engine to pull ref; the engine reports failures inside a
// stream that answered 200, so the stream is read to its end.
func (e *Engine) Pull(ctx context.Context, ref string) error {
	q := url.Values{"fromImage": {ref}}
	resp, err := e.do(ctx, http.MethodPost, "/images/create", q, nil)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("pulling %s: reading progress: %w", ref, err)
		}
		if m.Error != "" {
			return fmt.Errorf("pulling %s: %s", ref, m.Error)
		}
	}
}

// CreateSpec is the body of a container creation: Config's fields at the top
// level, plus HostConfig and NetworkingConfig, as the API wants it.
type CreateSpec map[string]any

// CreateContainer creates a container named name (empty: the engine names it)
// and returns its ID.
func (e *Engine) CreateContainer(ctx context.Context, name string, spec CreateSpec) (string, error) {
	var q url.Values
	if name != "" {
		q = url.Values{"name": {name}}
	}
	var out struct {
		ID string `json:"Id"`
	}
	if err := e.call(ctx, http.MethodPost, "/containers/create", q, spec, &out); err != nil {
		return "", fmt.Errorf("creating container %s: %w", name, err)
	}
	return out.ID, nil
}

// StartContainer starts a container; starting a running one is not an error.
func (e *Engine) StartContainer(ctx context.Context, id string) error {
	if err := e.call(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/start", nil, nil, nil); err != nil {
		return fmt.Errorf("starting container %s: %w", id, err)
	}
	return nil
}

// StopContainer stops a container, the engine killing it after timeout.
func (e *Engine) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	q := url.Values{"t": {fmt.Sprint(int(timeout.Seconds()))}}
	if err := e.call(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/stop", q, nil, nil); err != nil {
		return fmt.Errorf("stopping container %s: %w", id, err)
	}
	return nil
}

// WaitContainer waits until a container stops and returns its exit code.
func (e *Engine) WaitContainer(ctx context.Context, id string) (int, error) {
	var out struct {
		StatusCode int `json:"StatusCode"`
	}
	if err := e.call(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/wait", nil, nil, &out); err != nil {
		return 0, fmt.Errorf("waiting for container %s: %w", id, err)
	}
	return out.StatusCode, nil
}

// RemoveContainer removes a container, running or not; a missing one is fine.
func (e *Engine) RemoveContainer(ctx context.Context, id string) error {
	q := url.Values{"force": {"1"}, "v": {"0"}}
	err := e.call(ctx, http.MethodDelete, "/containers/"+url.PathEscape(id), q, nil, nil)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("removing container %s: %w", id, err)
	}
	return nil
}

// Logs returns what a stopped container printed, stdout and stderr together.
func (e *Engine) Logs(ctx context.Context, id string) (string, error) {
	q := url.Values{"stdout": {"1"}, "stderr": {"1"}}
	resp, err := e.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/logs", q, nil)
	if err != nil {
		return "", fmt.Errorf("reading logs of %s: %w", id, err)
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return "", fmt.Errorf("reading logs of %s: %w", id, err)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("reading logs of %s: %w", id, err)
	}
	return demux(b), nil
}

// demux strips the 8-byte frame headers of a non-TTY log stream; a stream
// without them (a TTY container) is returned as it is.
func demux(b []byte) string {
	var out bytes.Buffer
	for len(b) >= 8 && b[0] <= 2 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		n := int(binary.BigEndian.Uint32(b[4:8]))
		if 8+n > len(b) {
			break
		}
		out.Write(b[8 : 8+n])
		b = b[8+n:]
	}
	out.Write(b)
	return out.String()
}

// CopyFile reads one regular file out of a container's filesystem (it need
// not run) and writes it to dst with the executable bit.
func (e *Engine) CopyFile(ctx context.Context, id, path, dst string) error {
	q := url.Values{"path": {path}}
	resp, err := e.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/archive", q, nil)
	if err != nil {
		return fmt.Errorf("copying %s out of %s: %w", path, id, err)
	}
	defer resp.Body.Close()
	if err := checkStatus(resp); err != nil {
		return fmt.Errorf("copying %s out of %s: %w", path, id, err)
	}
	tr := tar.NewReader(resp.Body)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("copying %s out of %s: the archive holds no regular file", path, id)
		}
		if err != nil {
			return fmt.Errorf("copying %s out of %s: %w", path, id, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		return writeExecutable(tr, dst)
	}
}

func writeExecutable(r io.Reader, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	if _, err := io.Copy(f, io.LimitReader(r, 1<<30)); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return f.Close()
}
