package cluster

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const testSecret = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"

// writeConfig writes service.json (and any folders) into a fresh config folder.
func writeConfig(t *testing.T, serviceJSON string, folders ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "service.json"), []byte(serviceJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range folders {
		if err := os.MkdirAll(filepath.Join(dir, f), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sampleConfig is a sample's service.json with a real secret in place of
// the placeholder the capture left.
func sampleConfig(t *testing.T, release string) string {
	data := readSample(t, release, "service.json")
	data = bytes.Replace(data, []byte("<64 hex chars: the cluster secret>"), []byte(testSecret), 1)
	return string(data)
}

func TestLoadServiceConfigSamples(t *testing.T) {
	want := map[string]ServiceConfig{
		"0.14.5-crdt": {PeerName: "vm", Consensus: "crdt", Datastore: "badger", APIAddr: "/ip4/127.0.0.1/tcp/24504",
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/24506"}, BackupsRotate: 6},
		"1.0.8-crdt": {PeerName: "vm", Consensus: "crdt", Datastore: "pebble", APIAddr: "/ip4/127.0.0.1/tcp/24404",
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/24406"}, BackupsRotate: 6},
		"1.0.8-raft": {PeerName: "vm", Consensus: "raft", BackupsRotate: 6},
		"1.1.6-crdt": {PeerName: "vm", Consensus: "crdt", Datastore: "pebble", APIAddr: "/ip4/127.0.0.1/tcp/24004",
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/24006"}, BackupsRotate: 6},
		"1.1.6-raft": {PeerName: "vm", Consensus: "raft", APIAddr: "/ip4/127.0.0.1/tcp/24104",
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/24106"}, BackupsRotate: 6,
			InitPeerset: []string{"12D3KooWHFka2tF6YtX6PC3Y7yQLzShTeRT1V5Hmx7cxByVdn1hS",
				"12D3KooWDgC6Hmuc4HXAMF1FyCdwqagMYQ3oiyoZoLcSwLKeWJjs", "12D3KooWBzJ7kumKhVNcHztQtbV28hnnrtmfovDnzsrZ3JdegkJy"}},
	}
	for _, release := range sampleReleases() {
		t.Run(release, func(t *testing.T) {
			cfg, err := LoadServiceConfig(writeConfig(t, sampleConfig(t, release)))
			if err != nil {
				t.Fatal(err)
			}
			w := want[release]
			if hex.EncodeToString(cfg.Secret) != testSecret {
				t.Errorf("secret not decoded: %x", cfg.Secret)
			}
			if cfg.PeerName != w.PeerName || cfg.Consensus != w.Consensus || cfg.Datastore != w.Datastore ||
				cfg.BackupsRotate != w.BackupsRotate {
				t.Errorf("got %+v, want %+v", cfg, w)
			}
			if w.APIAddr != "" && cfg.APIAddr != w.APIAddr {
				t.Errorf("APIAddr = %q, want %q", cfg.APIAddr, w.APIAddr)
			}
			if w.ListenAddrs != nil && !slices.Equal(cfg.ListenAddrs, w.ListenAddrs) {
				t.Errorf("ListenAddrs = %q, want %q", cfg.ListenAddrs, w.ListenAddrs)
			}
			if w.InitPeerset != nil && !slices.Equal(cfg.InitPeerset, w.InitPeerset) {
				t.Errorf("InitPeerset = %q, want %q", cfg.InitPeerset, w.InitPeerset)
			}
			if len(cfg.PeerAddresses) != 2 {
				t.Errorf("PeerAddresses = %q, want the 2 other peers", cfg.PeerAddresses)
			}
			if cfg.Consensus == "raft" && len(cfg.InitPeerset) != 3 {
				t.Errorf("InitPeerset = %q, want 3 peers", cfg.InitPeerset)
			}
			// The state folder must be the one the capture found on disk.
			tree := string(readSample(t, release, "config-folder-files.txt"))
			folders := cfg.StateFolders()
			if len(folders) != 1 || !slices.Contains(strings.Fields(tree), folders[0]) {
				t.Errorf("StateFolders = %q, not among the captured files %q", folders, tree)
			}
		})
	}
}

func TestLoadServiceConfigMinimal(t *testing.T) {
	cfg, err := LoadServiceConfig(writeConfig(t, `{"cluster":{"secret":"`+testSecret+`"},"consensus":{"crdt":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Consensus != "crdt" || cfg.Datastore != "pebble" || cfg.APIAddr != DefaultAPIAddr ||
		!slices.Equal(cfg.ListenAddrs, []string{DefaultListenAddr}) || cfg.BackupsRotate != 6 ||
		!slices.Equal(cfg.StateFolders(), []string{"pebble"}) {
		t.Errorf("defaults not applied: %+v, state folders %q", cfg, cfg.StateFolders())
	}
}

func TestLoadServiceConfigCases(t *testing.T) {
	secret := `"secret":"` + testSecret + `"`
	tests := []struct {
		name, json string
		folders    []string
		wantErr    string // substring; "" for success
		consensus  string
		state      []string
		listen     []string
		api        string
		rotate     int
		creds      map[string]string
	}{
		{name: "raft with custom rotate and listen string",
			json:      `{"cluster":{` + secret + `,"listen_multiaddress":"/ip4/0.0.0.0/tcp/9096"},"consensus":{"raft":{"backups_rotate":3}}}`,
			consensus: "raft", state: []string{"raft"}, listen: []string{"/ip4/0.0.0.0/tcp/9096"}, rotate: 3},
		{name: "raft rotate zero takes the default",
			json:      `{"cluster":{` + secret + `},"consensus":{"raft":{"backups_rotate":0}}}`,
			consensus: "raft", state: []string{"raft"}, rotate: 6},
		{name: "raft custom data folder",
			json:      `{"cluster":{` + secret + `},"consensus":{"raft":{"data_folder":"raftdata"}}}`,
			consensus: "raft", state: []string{"raftdata"}, rotate: 6},
		{name: "raft data folder outside the config folder",
			json:    `{"cluster":{` + secret + `},"consensus":{"raft":{"data_folder":"/var/lib/raft"}}}`,
			wantErr: "data_folder"},
		{name: "crdt datastore folder escaping",
			json:    `{"cluster":{` + secret + `},"consensus":{"crdt":{}},"datastore":{"badger":{"folder":"../x"}}}`,
			wantErr: "datastore.badger.folder"},
		{name: "crdt datastore from disk when not configured",
			json:      `{"cluster":{` + secret + `},"consensus":{"crdt":{}}}`,
			folders:   []string{"leveldb"},
			consensus: "crdt", state: []string{"leveldb"}, rotate: 6},
		{name: "crdt several datastores, one on disk",
			json:      `{"cluster":{` + secret + `},"consensus":{"crdt":{}},"datastore":{"pebble":{},"badger3":{}}}`,
			folders:   []string{"badger3"},
			consensus: "crdt", state: []string{"badger3"}, rotate: 6},
		{name: "crdt several datastores, none on disk",
			json:    `{"cluster":{` + secret + `},"consensus":{"crdt":{}},"datastore":{"pebble":{},"badger3":{}}}`,
			wantErr: "several datastores"},
		{name: "unknown datastore ignored",
			json:      `{"cluster":{` + secret + `},"consensus":{"crdt":{}},"datastore":{"rocks":{},"badger":{}}}`,
			consensus: "crdt", state: []string{"badger"}, rotate: 6},
		{name: "listen and api as arrays, unknown fields",
			json: `{"x":1,"cluster":{` + secret + `,"new":true,"listen_multiaddress":["/ip4/0.0.0.0/tcp/9096","/ip4/0.0.0.0/udp/9096/quic"]},` +
				`"consensus":{"crdt":{"cluster_name":"c"}},"api":{"restapi":{"http_listen_multiaddress":["/ip4/10.0.0.1/tcp/1","/ip6/::1/tcp/2"],` +
				`"basic_auth_credentials":{"admin":"pw"}}}}`,
			creds:     map[string]string{"admin": "pw"},
			consensus: "crdt", state: []string{"pebble"}, rotate: 6, api: "/ip4/10.0.0.1/tcp/1",
			listen: []string{"/ip4/0.0.0.0/tcp/9096", "/ip4/0.0.0.0/udp/9096/quic"}},
		{name: "no secret", json: `{"cluster":{},"consensus":{"crdt":{}}}`, wantErr: "secret is missing"},
		{name: "short secret", json: `{"cluster":{"secret":"abcd"},"consensus":{"crdt":{}}}`, wantErr: "64 hexadecimal"},
		{name: "non-hex secret", json: `{"cluster":{"secret":"` + strings.Repeat("zz", 32) + `"},"consensus":{"crdt":{}}}`, wantErr: "64 hexadecimal"},
		{name: "no consensus", json: `{"cluster":{` + secret + `}}`, wantErr: "no consensus"},
		{name: "null consensus sections", json: `{"cluster":{` + secret + `},"consensus":{"raft":null,"crdt":null}}`, wantErr: "no consensus"},
		{name: "both consensus", json: `{"cluster":{` + secret + `},"consensus":{"raft":{},"crdt":{}}}`, wantErr: "both"},
		{name: "listen of wrong type", json: `{"cluster":{` + secret + `,"listen_multiaddress":5},"consensus":{"crdt":{}}}`, wantErr: "listen_multiaddress"},
		{name: "not JSON", json: `{"cluster":`, wantErr: "decoding JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadServiceConfig(writeConfig(t, tt.json, tt.folders...))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one mentioning %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Errorf("error quotes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Consensus != tt.consensus || !slices.Equal(cfg.StateFolders(), tt.state) || cfg.BackupsRotate != tt.rotate {
				t.Errorf("got consensus %q state %q rotate %d, want %q %q %d",
					cfg.Consensus, cfg.StateFolders(), cfg.BackupsRotate, tt.consensus, tt.state, tt.rotate)
			}
			if tt.listen != nil && !slices.Equal(cfg.ListenAddrs, tt.listen) {
				t.Errorf("ListenAddrs = %q, want %q", cfg.ListenAddrs, tt.listen)
			}
			if !maps.Equal(cfg.APICredentials, tt.creds) {
				t.Errorf("APICredentials = %v, want %v", cfg.APICredentials, tt.creds)
			}
			if tt.api != "" && cfg.APIAddr != tt.api {
				t.Errorf("APIAddr = %q, want %q", cfg.APIAddr, tt.api)
			}
		})
	}
}

func TestLoadServiceConfigMissingFile(t *testing.T) {
	if _, err := LoadServiceConfig(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error = %v, want a not-exist error", err)
	}
}

func TestLoadPeerID(t *testing.T) {
	tests := []struct{ name, file, want, wantErr string }{
		{"identity", `{"id":"12D3KooWHFka2tF6YtX6PC3Y7yQLzShTeRT1V5Hmx7cxByVdn1hS","private_key":"CAESQ..."}`,
			"12D3KooWHFka2tF6YtX6PC3Y7yQLzShTeRT1V5Hmx7cxByVdn1hS", ""},
		{"no id", `{"private_key":"x"}`, "", "has no id"},
		{"not JSON", `id: x`, "", "decoding"},
		{"missing", "", "", "reading"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				if err := os.WriteFile(filepath.Join(dir, "identity.json"), []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := LoadPeerID(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("LoadPeerID = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzLoadServiceConfig(f *testing.F) {
	for _, release := range sampleReleases() {
		f.Add(bytes.Replace(readSample(f, release, "service.json"),
			[]byte("<64 hex chars: the cluster secret>"), []byte(testSecret), 1))
	}
	f.Add([]byte(`{"cluster":{"secret":"` + testSecret + `"},"consensus":{"crdt":{}},"datastore":{"pebble":{"folder":".."}}}`))
	f.Add([]byte(`{"cluster":{"secret":"` + testSecret + `","listen_multiaddress":[]},"consensus":{"raft":{"data_folder":"a/b"}}}`))
	dir := f.TempDir()
	path := filepath.Join(dir, "service.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadServiceConfig(dir)
		if err != nil {
			return
		}
		if len(cfg.Secret) != 32 || (cfg.Consensus != "raft" && cfg.Consensus != "crdt") ||
			cfg.APIAddr == "" || len(cfg.ListenAddrs) == 0 || cfg.BackupsRotate <= 0 {
			t.Fatalf("accepted an incomplete config: %+v", cfg)
		}
		folders := cfg.StateFolders()
		if len(folders) != 1 {
			t.Fatalf("StateFolders = %q", folders)
		}
		// A state folder is copied and removed: it must stay inside dir.
		f := folders[0]
		if f == "" || f == "." || f == ".." || strings.ContainsAny(f, `/\`) || filepath.IsAbs(f) {
			t.Fatalf("state folder %q escapes the config folder", f)
		}
	})
}
