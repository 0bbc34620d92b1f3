package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// replay serves a sample folder's captured answers the way its release did:
// 1.x streams with an X-Stream-Error trailer (empty, or streamErr when set),
// 0.14.5 one array.
func replay(t *testing.T, release, streamErr string) *httptest.Server {
	t.Helper()
	streaming := strings.Contains(string(readSample(t, release, "get-allocations.headers.txt")), "Trailer: X-Stream-Error")
	mux := http.NewServeMux()
	static := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(readSample(t, release, name))
		}
	}
	stream := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body := readSample(t, release, name)
			w.Header().Set("Content-Type", "application/json")
			if !streaming {
				w.Write(body)
				return
			}
			w.Header().Set("Trailer", streamErrorTrailer)
			for _, line := range bytes.SplitAfter(body, []byte("\n")) {
				w.Write(line)
				w.(http.Flusher).Flush()
			}
			w.Header().Set(streamErrorTrailer, streamErr)
		}
	}
	mux.HandleFunc("GET /id", static("get-id.json"))
	mux.HandleFunc("GET /version", static("get-version.json"))
	mux.HandleFunc("GET /peers", stream("get-peers.ndjson"))
	mux.HandleFunc("GET /allocations", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("filter") != "all" {
			http.Error(w, `{"code":400,"message":"want filter=all in this test"}`, http.StatusBadRequest)
			return
		}
		stream("get-allocations.ndjson")(w, r)
	})
	mux.HandleFunc("POST /pins/{cid}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("cid") == "not-a-cid" {
			replayCaptured(t, w, readSample(t, release, "post-pins-bad-cid.txt"))
			return
		}
		static("post-pins.json")(w, r)
	})
	mux.HandleFunc("DELETE /peers/{id}", func(w http.ResponseWriter, r *http.Request) {
		replayCaptured(t, w, readSample(t, release, "delete-peer.txt"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// replayCaptured answers with a capture of the form "[JSON body]\n...HTTP NNN".
func replayCaptured(t *testing.T, w http.ResponseWriter, capture []byte) {
	m := regexp.MustCompile(`(?m)^HTTP (\d{3})$`).FindSubmatch(capture)
	if m == nil {
		t.Errorf("capture has no HTTP status: %q", capture)
		return
	}
	status, _ := strconv.Atoi(string(m[1]))
	first, _, _ := bytes.Cut(capture, []byte("\n"))
	if bytes.HasPrefix(first, []byte("{")) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(first)
		return
	}
	w.WriteHeader(status)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientSamples(t *testing.T) {
	for _, release := range sampleReleases() {
		t.Run(release, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			c := NewClient(replay(t, release, "").URL)
			version := strings.SplitN(release, "-", 2)[0]

			id, err := c.ID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var want ID
			if err := json.Unmarshal(readSample(t, release, "get-id.json"), &want); err != nil {
				t.Fatal(err)
			}
			// 1.0.8-crdt was captured while membership still lagged (2 of 3 peers seen).
			if id.ID == "" || id.ID != want.ID || id.Version != version || id.PeerName != "vm" ||
				len(id.ClusterPeers) < 2 || !slices.Equal(id.ClusterPeers, want.ClusterPeers) ||
				len(id.ClusterPeersAddresses) != len(id.ClusterPeers)-1 || len(id.Addresses) != 1 ||
				!strings.HasPrefix(id.RPCProtocolVersion, "/ipfscluster/") || id.IPFS.Error == "" {
				t.Errorf("ID = %+v", id)
			}
			if h, err := c.Health(ctx); err != nil || h.ID != id.ID || h.Version != id.Version || !slices.Equal(h.ClusterPeers, id.ClusterPeers) {
				t.Errorf("Health = %+v, %v; want the id, version and cluster peers of %+v", h, err, id)
			}

			if v, err := c.Version(ctx); err != nil || v != version {
				t.Errorf("Version = %q, %v; want %q", v, err, version)
			}

			peers, err := c.Peers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wantPeers := strings.Count(string(readSample(t, release, "get-peers.ndjson")), `"rpc_protocol_version"`)
			if len(peers) < 2 || len(peers) != wantPeers || !slices.ContainsFunc(peers, func(p ID) bool { return p.ID == id.ID }) {
				t.Errorf("Peers = %+v, want %d including %s", peers, wantPeers, id.ID)
			}
			for _, p := range peers {
				if p.Version != version || p.ID == "" {
					t.Errorf("peer %+v", p)
				}
			}
			ids, err := c.PeerIDs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var wantIDs []string
			for _, p := range peers {
				wantIDs = append(wantIDs, p.ID)
			}
			if !slices.Equal(ids, wantIDs) {
				t.Errorf("PeerIDs = %q, want %q", ids, wantIDs)
			}

			var cids []string
			var raws []json.RawMessage
			err = c.StreamPins(ctx, func(cid string, raw json.RawMessage) error {
				cids = append(cids, cid)
				raws = append(raws, raw)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if wantCIDs := sampleCIDs(t, release, "get-allocations.ndjson"); len(cids) != 3 || !slices.Equal(cids, wantCIDs) {
				t.Errorf("StreamPins cids = %q, want %q", cids, wantCIDs)
			}
			// raw must be the peer's own bytes: each one appears verbatim in the capture.
			for _, raw := range raws {
				if !bytes.Contains(readSample(t, release, "get-allocations.ndjson"), raw) || !json.Valid(raw) {
					t.Errorf("raw pin is not the object as sent: %s", raw)
				}
			}
			if n, err := c.PinCount(ctx); err != nil || n != 3 {
				t.Errorf("PinCount = %d, %v; want 3", n, err)
			}
		})
	}
}

func TestClientPinAndErrors(t *testing.T) {
	for _, release := range sampleReleases() {
		t.Run(release, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			c := NewClient(replay(t, release, "").URL)
			cid := sampleCIDs(t, release, "post-pins.json")[0]
			if err := c.Pin(ctx, cid, "sample"); err != nil {
				t.Errorf("Pin: %v", err)
			}

			err := c.Pin(ctx, "not-a-cid", "")
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "error decoding Cid") {
				t.Errorf("Pin of a bad cid: %v, want a 400 *APIError", err)
			}
			if IsUnreachable(err) {
				t.Errorf("an API error counted as unreachable: %v", err)
			}

			err = c.RemovePeer(ctx, "12D3KooWBzJ7kumKhVNcHztQtbV28hnnrtmfovDnzsrZ3JdegkJy")
			if strings.HasSuffix(release, "-raft") {
				if err != nil {
					t.Errorf("RemovePeer on raft: %v", err)
				}
				return
			}
			if !errors.As(err, &apiErr) || apiErr.Status != 500 || apiErr.Message != "crdt consensus component cannot remove peers" {
				t.Errorf("RemovePeer on crdt: %v, want the 500 *APIError", err)
			}
		})
	}
}

func TestStreamPinsTrailerError(t *testing.T) {
	for _, release := range []string{"1.0.8-raft", "1.1.6-crdt"} {
		t.Run(release, func(t *testing.T) {
			c := NewClient(replay(t, release, "context canceled while listing pins").URL)
			n := 0
			err := c.StreamPins(testCtx(t), func(string, json.RawMessage) error { n++; return nil })
			if err == nil || !strings.Contains(err.Error(), "context canceled while listing pins") {
				t.Fatalf("StreamPins = %v, want the trailer's error", err)
			}
			if _, err := c.PinCount(testCtx(t)); err == nil {
				t.Fatal("PinCount ignored the trailer's error")
			}
		})
	}
}

func TestStreamPinsStopsOnCallbackError(t *testing.T) {
	c := NewClient(replay(t, "1.1.6-crdt", "").URL)
	stop := errors.New("disk full")
	n := 0
	err := c.StreamPins(testCtx(t), func(string, json.RawMessage) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("StreamPins = %v after %d pins, want the callback's error after 1", err, n)
	}
}

func TestStreamPinsTruncatedStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", streamErrorTrailer)
		w.Write([]byte(`{"cid":"bafkreianuyqu4x7gt3r5ti565qj6hwpob3ibfknh2kmbz7qnvhiqvrooim"}` + "\n" + `{"cid":"bafk`))
		w.(http.Flusher).Flush()
		// Drop the connection mid-object, as a crashing peer would.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	n := 0
	err := NewClient(srv.URL).StreamPins(testCtx(t), func(string, json.RawMessage) error { n++; return nil })
	if err == nil || n != 1 {
		t.Fatalf("StreamPins = %v after %d pins, want an error after 1", err, n)
	}
}

func TestClientBasicAuthAndNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "admin" || p != "s3cret" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"version":"1.1.6","extra":{"a":1}}`))
	}))
	defer srv.Close()
	ctx := testCtx(t)
	if v, err := NewClient(srv.URL, WithBasicAuth("admin", "s3cret"), WithHTTPClient(srv.Client())).Version(ctx); err != nil || v != "1.1.6" {
		t.Fatalf("Version with auth = %q, %v", v, err)
	}
	_, err := NewClient(srv.URL).Version(ctx)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || apiErr.Message != "Unauthorized" {
		t.Fatalf("Version without auth = %v, want a 401 *APIError", err)
	}
}

func TestDecodeObjectsForms(t *testing.T) {
	tests := []struct {
		name, body string
		want       int
		wantErr    bool
	}{
		{"empty body", "", 0, false},
		{"null", "null\n", 0, false},
		{"empty array", " [ ]\n", 0, false},
		{"array", `[{"cid":"a"},{"cid":"b"}]`, 2, false},
		{"ndjson", "{\"cid\":\"a\"}\n{\"cid\":\"b\"}\n{\"cid\":\"c\"}\n", 3, false},
		{"concatenated", `{"cid":"a"}{"cid":"b"}`, 2, false},
		{"unterminated array", `[{"cid":"a"},`, 1, true},
		{"data after the array", `[{"cid":"a"}] {"cid":"b"}`, 1, true},
		{"broken object", "{\"cid\":\"a\"}\n{\"cid\":", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			err := decodeEach(strings.NewReader(tt.body), func(*json.RawMessage) error { n++; return nil })
			if (err != nil) != tt.wantErr || n != tt.want {
				t.Fatalf("decodeEach = %d objects, %v; want %d, error %v", n, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestPinCID(t *testing.T) {
	tests := []struct{ raw, want string }{
		{`{"cid":"bafkreianuy","type":"pin"}`, "bafkreianuy"},
		{`{"cid":{"/":"bafkreianuy"},"type":2}`, "bafkreianuy"},
		{`{"type":"pin"}`, ""},
		{`{"cid":null}`, ""},
		{`{"cid":""}`, ""},
		{`{"cid":{"/":""}}`, ""},
		{`{"cid":42}`, ""},
		{`[1]`, ""},
	}
	for _, tt := range tests {
		got, err := pinCID(json.RawMessage(tt.raw))
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("pinCID(%s) = %q, %v; want %q", tt.raw, got, err, tt.want)
		}
	}
}

func TestIsUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = NewClient("http://" + addr).ID(testCtx(t))
	if err == nil || !IsUnreachable(err) {
		t.Errorf("refused connection: IsUnreachable(%v) = false", err)
	}

	// A server that accepts and never answers: the caller's deadline ends it.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = NewClient(hang.URL).ID(ctx)
	if err == nil || !IsUnreachable(err) {
		t.Errorf("timeout: IsUnreachable(%v) = false", err)
	}

	// A server that hangs up before answering, as a stopping peer does.
	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = bufio.NewWriter(buf).Flush()
			conn.Close()
		}
	}))
	defer hangup.Close()
	_, err = NewClient(hangup.URL).Version(testCtx(t))
	if err == nil || !IsUnreachable(err) {
		t.Errorf("hang-up: IsUnreachable(%v) = false", err)
	}

	for _, err := range []error{nil, errors.New("decoding the answer: bad JSON"), &APIError{Status: 503, Message: "starting"}} {
		if IsUnreachable(err) {
			t.Errorf("IsUnreachable(%v) = true", err)
		}
	}
}
