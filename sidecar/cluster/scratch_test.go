package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestScratchConfigHoldsOnlyThePeersConfig(t *testing.T) {
	peer, scratch := t.TempDir(), filepath.Join(t.TempDir(), "scratch")
	for name, body := range map[string]string{"service.json": `{"s":1}`, "identity.json": `{"i":1}`, "peerstore": "x"} {
		if err := os.WriteFile(filepath.Join(peer, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(peer, "pebble"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(scratch, "pebble"), 0o700); err != nil { // left by an earlier read
		t.Fatal(err)
	}
	if err := ScratchConfig(peer, scratch); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(scratch)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"identity.json", "service.json"}; !slices.Equal(names, want) {
		t.Fatalf("scratch holds %v, want %v", names, want)
	}
	if b, _ := os.ReadFile(filepath.Join(scratch, "service.json")); string(b) != `{"s":1}` {
		t.Fatalf("service.json copied as %q", b)
	}
	if err := ScratchConfig(filepath.Join(peer, "missing"), scratch); err == nil {
		t.Fatal("a peer folder without service.json gave a scratch config")
	}
}
