package p2p

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIsolationHook: the chaos tests' cut-off hook drops the host's
// connections and refuses new ones, in and out, while its file exists, and
// the host is reconnected once the file is removed.
func TestIsolationHook(t *testing.T) {
	b := startNode(t, nodeOpts{}) // started before the variable is set: no hook
	flag := filepath.Join(t.TempDir(), "cut")
	t.Setenv(IsolateFileEnv, flag)
	a := startNode(t, nodeOpts{bootstrap: addrStrings(b)})
	eventually(t, 10*time.Second, "a connected to b", func() bool { return connected(a, b) })

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a cut off from b", func() bool { return !connected(a, b) && !connected(b, a) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Connect(ctx, addrStrings(a)); err == nil {
		t.Fatal("b connected to a cut-off host")
	}
	if err := a.Connect(ctx, addrStrings(b)); err == nil {
		t.Fatal("a cut-off host connected out")
	}

	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a reconnected to b", func() bool { return connected(a, b) })
}
