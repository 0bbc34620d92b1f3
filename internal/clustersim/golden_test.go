package clustersim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

const samples = "../../testdata/samples"

// shape compares the JSON shape of got against want: same keys, same kinds;
// a null in the sample accepts anything, arrays compare their first items.
func shape(path string, want, got any) []string {
	if want == nil {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want object, got %T", path, got)}
		}
		var diffs []string
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				diffs = append(diffs, path+"."+k+": missing")
				continue
			}
			diffs = append(diffs, shape(path+"."+k, wv, gv)...)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				diffs = append(diffs, path+"."+k+": not in the sample")
			}
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want array, got %T", path, got)}
		}
		if len(w) > 0 && len(g) > 0 {
			return shape(path+"[0]", w[0], g[0])
		}
		return nil
	default:
		if fmt.Sprintf("%T", want) != fmt.Sprintf("%T", got) {
			return []string{fmt.Sprintf("%s: want %T, got %T", path, want, got)}
		}
		return nil
	}
}

func decodeAll(t *testing.T, b []byte) []any {
	t.Helper()
	var out []any
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decoding %q: %v", b, err)
		}
		out = append(out, v)
	}
	return out
}

func sample(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samples, dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compareShape(t *testing.T, what string, want, got []byte) {
	t.Helper()
	w, g := decodeAll(t, want), decodeAll(t, got)
	if len(w) == 0 || len(g) == 0 {
		t.Errorf("%s: empty (sample %d values, ours %d)", what, len(w), len(g))
		return
	}
	for _, d := range shape(what, w[0], g[0]) {
		t.Error(d)
	}
}

// Every answer the driver reads has the shape of the release's own.
func TestGoldenShapes(t *testing.T) {
	for _, tc := range []struct{ dir, version, consensus string }{
		{"0.14.5-crdt", "0.14.5", "crdt"}, {"1.0.8-crdt", "1.0.8", "crdt"}, {"1.0.8-raft", "1.0.8", "raft"},
		{"1.1.6-crdt", "1.1.6", "crdt"}, {"1.1.6-raft", "1.1.6", "raft"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			t.Parallel()
			b := bins(t, tc.version, "")
			peers, err := simtest.InitCluster(testCtx(t, 20*time.Second), t.TempDir(), 1, tc.consensus, b)
			if err != nil {
				t.Fatal(err)
			}
			var wantCfg, gotCfg any
			_ = json.Unmarshal(sample(t, tc.dir, "service.json"), &wantCfg)
			cfgBytes, _ := os.ReadFile(filepath.Join(peers[0].Dir, "service.json"))
			_ = json.Unmarshal(cfgBytes, &gotCfg)
			for _, d := range shape("service.json", wantCfg, gotCfg) {
				t.Error(d)
			}
			pr := startAll(t, b, peers)
			p := peers[0]
			ctx := testCtx(t, 10*time.Second)
			code, post, err := simtest.Do(ctx, "POST", p.APIURL, "/pins/"+testCIDs[0]+"?name=sample")
			if err != nil || code != 200 {
				t.Fatalf("pin: %d %v", code, err)
			}
			compareShape(t, "post-pins", sample(t, tc.dir, "post-pins.json"), post)
			waitPins(t, p, 1, 5*time.Second)
			for path, file := range map[string]string{
				"/id": "get-id.json", "/version": "get-version.json", "/peers": "get-peers.ndjson",
				"/allocations?filter=all": "get-allocations.ndjson",
			} {
				_, body, err := simtest.Get(ctx, p.APIURL, path)
				if err != nil {
					t.Fatal(err)
				}
				compareShape(t, path, sample(t, tc.dir, file), body)
			}
			checkHeaders(t, tc.dir, p.APIURL)
			code, bad, _ := simtest.Do(ctx, "POST", p.APIURL, "/pins/notacid")
			wantBad := strings.SplitN(string(sample(t, tc.dir, "post-pins-bad-cid.txt")), "\n", 2)[0]
			if code != 400 || strings.TrimSpace(string(bad)) != wantBad {
				t.Errorf("bad cid: %d %s, want 400 %s", code, bad, wantBad)
			}
			stop(t, pr...)
			checkCLITexts(t, b, tc.dir)
		})
	}
}

func checkHeaders(t *testing.T, dir, apiURL string) {
	t.Helper()
	resp, err := http.Get(apiURL + "/allocations?filter=all")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = bytes.NewBuffer(nil).ReadFrom(resp.Body)
	streamed := strings.Contains(string(sample(t, dir, "get-allocations.headers.txt")), "Trailer: X-Stream-Error")
	// Go's client moves the announced Trailer header into resp.Trailer.
	if _, got := resp.Trailer["X-Stream-Error"]; got != streamed {
		t.Errorf("X-Stream-Error trailer present %v, sample %v", got, streamed)
	}
	if !streamed && resp.ContentLength <= 0 {
		t.Errorf("0.x answers with a Content-Length")
	}
}

func checkCLITexts(t *testing.T, b simtest.Binaries, dir string) {
	t.Helper()
	texts := map[string][]string{
		"service-help.txt":               {b.Service, "--help"},
		"service-help-daemon.txt":        {b.Service, "daemon", "--help"},
		"service-help-init.txt":          {b.Service, "init", "--help"},
		"service-help-state.txt":         {b.Service, "state", "--help"},
		"service-help-state-export.txt":  {b.Service, "state", "export", "--help"},
		"service-help-state-import.txt":  {b.Service, "state", "import", "--help"},
		"service-help-state-cleanup.txt": {b.Service, "state", "cleanup", "--help"},
		"service-version.txt":            {b.Service, "--version"},
		"ctl-help.txt":                   {b.Ctl, "--help"},
		"ctl-version.txt":                {b.Ctl, "--version"},
	}
	home, _ := os.UserHomeDir()
	for file, args := range texts {
		out := mustRun(t, args[0], args[1:]...)
		want := strings.ReplaceAll(string(sample(t, dir, file)), "/root/.ipfs-cluster", filepath.Join(home, ".ipfs-cluster"))
		if strings.TrimRight(out, "\n ") != strings.TrimRight(want, "\n ") {
			t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", file, out, want)
		}
	}
}

func TestOldReleaseHasStateUpgrade(t *testing.T) {
	t.Parallel()
	b := bins(t, "0.11.0", "")
	out := mustRun(t, b.Service, "state", "--help")
	if !strings.Contains(out, "   upgrade ") {
		t.Errorf("0.11.0 state help lacks upgrade:\n%s", out)
	}
	if out := mustRun(t, b.Service, "version"); out != "ipfs-cluster-service version 0.11.0\n" {
		t.Errorf("version: %q", out)
	}
	for _, v := range []string{"1.1.6", "0.14.5"} {
		if out := mustRun(t, bins(t, v, "").Service, "state", "--help"); strings.Contains(out, "upgrade") {
			t.Errorf("%s should not list state upgrade", v)
		}
	}
}
