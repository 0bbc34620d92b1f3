package stage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskFullHook: with the chaos tests' hook set, Fetch fails as on a full
// disk while the hook's file exists (leaving nothing behind), and works again
// once it is removed.
func TestDiskFullHook(t *testing.T) {
	dir := t.TempDir()
	content := []byte(strings.Repeat("binary", 20000))
	src := filepath.Join(dir, "ipfs-cluster-service")
	if err := os.WriteFile(src, content, 0o755); err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(dir, "diskfull")
	t.Setenv(DiskFullFileEnv, flag)
	a := Artifact{Source: src, SHA256: digest(content)}

	for _, allowance := range []string{"0", "4096"} {
		if err := os.WriteFile(flag, []byte(allowance), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out-"+allowance)
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Fetch(testCtx(t), a, out)
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("allowance %s: want a disk-full error, got %v", allowance, err)
		}
		if left, _ := os.ReadDir(out); len(left) != 0 {
			t.Fatalf("allowance %s: a failed fetch left %v", allowance, left)
		}
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(testCtx(t), a, t.TempDir()); err != nil {
		t.Fatalf("with the hook's file removed: %v", err)
	}
}
