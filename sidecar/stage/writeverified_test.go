package stage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteVerified(t *testing.T) {
	good := []byte("the bytes of a release")
	tests := []struct {
		name    string
		body    []byte
		sha     string
		max     int64
		wantErr error
		errText string
	}{
		{name: "right bytes", body: good, sha: digest(good), max: 1 << 20},
		{name: "forged bytes", body: []byte("the bytes of a forgery"), sha: digest(good), max: 1 << 20, wantErr: ErrChecksumMismatch},
		{name: "truncated bytes", body: good[:5], sha: digest(good), max: 1 << 20, wantErr: ErrChecksumMismatch},
		{name: "over the size limit", body: good, sha: digest(good), max: 4, wantErr: ErrTooLarge},
		{name: "no digest", body: good, sha: "", max: 1 << 20, errText: "no sha256 given"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			final := filepath.Join(dir, "release.tar.gz")
			n, err := WriteVerified(bytes.NewReader(tc.body), final, tc.sha, tc.max)
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, rerr := os.ReadFile(final)
				if rerr != nil || !bytes.Equal(got, good) || n != int64(len(good)) {
					t.Fatalf("staged %d bytes %q (%v), want %q", n, got, rerr, good)
				}
				return
			}
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v, want %v %q", err, tc.wantErr, tc.errText)
			}
			if left := dirEntries(t, dir); len(left) != 0 {
				t.Fatalf("a refused write left %v behind", left)
			}
		})
	}
}

func TestIsLocal(t *testing.T) {
	for src, want := range map[string]bool{
		"/srv/releases/ipfs-cluster-service": true,
		"release.tar.gz":                     true,
		"file:///srv/release.tar.gz":         true,
		"http://mirror/release.tar.gz":       false,
		"https://mirror/release.tar.gz":      false,
		"/ipfs/bafyrelease":                  false,
	} {
		if got := IsLocal(src); got != want {
			t.Errorf("IsLocal(%q) = %v, want %v", src, got, want)
		}
	}
}
