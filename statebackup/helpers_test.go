package statebackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// stepClock is a fake clock that moves one second forward each time it is read, so every backup of a test has
// its own time and the newest-first order is known.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func newTestStore(t testing.TB) *Store {
	t.Helper()
	clock := &stepClock{t: time.Date(2026, 1, 24, 11, 35, 0, 0, time.UTC)}
	s, err := Open(filepath.Join(t.TempDir(), "backups"), zaptest.NewLogger(t), WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeStreamer hands out pre-made pin objects; after failAfter pins (when > 0) it calls cancel (if set) or
// fails with errStreamBroken, as a peer dying mid-stream would.
type fakeStreamer struct {
	pins      []json.RawMessage
	failAfter int
	cancel    context.CancelFunc
}

var errStreamBroken = errors.New("stream broken")

func (f *fakeStreamer) StreamPins(ctx context.Context, fn func(string, json.RawMessage) error) error {
	for i, raw := range f.pins {
		if f.failAfter > 0 && i == f.failAfter {
			if f.cancel == nil {
				return errStreamBroken
			}
			f.cancel()
		}
		if err := fn("", raw); err != nil {
			return err
		}
	}
	return nil
}

// syntheticCID makes a distinct, realistic-looking CIDv1 (59 characters) for each n.
func syntheticCID(n int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(n)))
	return "bafkrei" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
}

// syntheticPin is a pin object shaped like 1.1.6's, with its fields in the API's order.
func syntheticPin(n int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"replication_factor_min":-1,"replication_factor_max":-1,"name":"pin-%d",`+
		`"mode":"recursive","shard_size":0,"user_allocations":null,"expire_at":"0001-01-01T00:00:00Z",`+
		`"metadata":null,"pin_update":null,"origins":[],"cid":"%s","type":"pin","allocations":[],"max_depth":-1,`+
		`"reference":null,"timestamp":"2026-11-24T11:31:28Z"}`, n, syntheticCID(n)))
}

func syntheticPins(n int) []json.RawMessage {
	out := make([]json.RawMessage, n)
	for i := range out {
		out[i] = syntheticPin(i)
	}
	return out
}

func ndjson(pins []json.RawMessage) []byte {
	var b bytes.Buffer
	for _, p := range pins {
		b.Write(p)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// httpStreamer is a tiny REST client of the real API's GET /allocations?filter=all: it reads the 1.x stream or
// 0.14.5's array and reports a non-empty X-Stream-Error trailer as a failure.
type httpStreamer struct{ base string }

func (h httpStreamer) StreamPins(ctx context.Context, fn func(string, json.RawMessage) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/allocations?filter=all", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /allocations: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var objs []json.RawMessage
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &objs); err != nil {
			return err
		}
	} else {
		for dec := json.NewDecoder(bytes.NewReader(body)); dec.More(); {
			var o json.RawMessage
			if err := dec.Decode(&o); err != nil {
				return err
			}
			objs = append(objs, o)
		}
	}
	for _, o := range objs {
		if err := fn(apiCID(o), o); err != nil {
			return err
		}
	}
	if e := resp.Trailer.Get("X-Stream-Error"); e != "" {
		return fmt.Errorf("pinset stream failed: %s", e)
	}
	return nil
}

func apiCID(o json.RawMessage) string {
	var p struct{ CID any }
	_ = json.Unmarshal(o, &p)
	switch c := p.CID.(type) {
	case string:
		return c
	case map[string]any:
		s, _ := c["/"].(string)
		return s
	}
	return ""
}

// replayServer answers GET /allocations with body, streaming with a trailer as 1.x does unless the body is an
// array (0.14.5). streamErr is sent as the X-Stream-Error trailer.
func replayServer(t *testing.T, body []byte, streamErr string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/allocations" || r.URL.Query().Get("filter") != "all" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if bytes.HasPrefix(body, []byte("[")) {
			_, _ = w.Write(body)
			return
		}
		w.Header().Set("Trailer", "X-Stream-Error")
		_, _ = w.Write(body)
		w.Header().Set("X-Stream-Error", streamErr)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// listDir returns the sorted names in dir (recursively, relative), for "nothing changed" checks.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		names = append(names, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

var sampleReleases = []string{"0.14.5-crdt", "1.0.8-crdt", "1.0.8-raft", "1.1.6-crdt", "1.1.6-raft"}

func samplePath(release, name string) string {
	return filepath.Join("..", "testdata", "samples", release, name)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
