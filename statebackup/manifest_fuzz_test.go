package statebackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzManifest writes arbitrary bytes as the manifest of a real backup and
// reads the store through every way a manifest is parsed (Get, List,
// Verify). A manifest is untrusted input (the folder may be shared or
// tampered with): whatever is accepted must name a data file inside the
// store, and Verify may succeed only when the recorded checksum, size and pin
// count are the real ones of that file.
func FuzzManifest(f *testing.F) {
	ctx := context.Background()
	dir := f.TempDir()
	s, err := Open(filepath.Join(dir, "store"), nil)
	if err != nil {
		f.Fatal(err)
	}
	real, err := s.AddExport(ctx, "../testdata/samples/1.1.6-crdt/state-export.ndjson", KindLiveExport, Meta{ClusterVersion: "1.1.6"})
	if err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir(), real.File))
	if err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256(data)
	realSum, realSize := hex.EncodeToString(sum[:]), int64(len(data))
	manifestPath := filepath.Join(s.Dir(), real.ID+manifestExt)
	good, err := os.ReadFile(manifestPath)
	if err != nil {
		f.Fatal(err)
	}
	mutate := func(edit func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			f.Fatal(err)
		}
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
	f.Add(good, real.ID)
	f.Add(mutate(func(m map[string]any) { m["pins"] = real.Pins + 1 }), real.ID)
	f.Add(mutate(func(m map[string]any) { m["file"] = "../../etc/passwd" }), "../x")
	f.Add(mutate(func(m map[string]any) { m["file"] = real.ID + "/../../secret" }), real.ID)
	f.Add(mutate(func(m map[string]any) { m["kind"] = "state-folder" }), "")
	f.Add(mutate(func(m map[string]any) { m["sha256"] = strings.Repeat("0", 64) }), real.ID)
	f.Add([]byte("{"), ".hidden")

	f.Fuzz(func(t *testing.T, manifest []byte, id string) {
		if err := os.WriteFile(manifestPath, manifest, 0o600); err != nil {
			t.Fatal(err)
		}
		if m, err := s.Get(id); err == nil {
			inside(t, s, m, id)
		}
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			inside(t, s, m, m.ID)
		}
		m, err := s.Verify(ctx, real.ID)
		if err != nil {
			return
		}
		inside(t, s, m, real.ID)
		if m.File != real.File || m.SHA256 != realSum || m.Size != realSize {
			t.Fatalf("verified a manifest that does not describe its file: %+v", m)
		}
		if m.Kind.isExport() && m.Pins != real.Pins {
			t.Fatalf("verified %d pins, the file holds %d", m.Pins, real.Pins)
		}
	})
}

// inside fails unless m is backup id and its data file is in the store folder.
func inside(t *testing.T, s *Store, m *Manifest, id string) {
	t.Helper()
	if m.ID != id || !m.Kind.valid() {
		t.Fatalf("accepted manifest %+v for %q", m, id)
	}
	p := filepath.Join(s.Dir(), m.File)
	if filepath.Dir(p) != s.Dir() {
		t.Fatalf("manifest %s names a data file outside the store: %q", id, m.File)
	}
}
