package stage

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzUnpack feeds arbitrary bytes as a tarball: Unpack must never panic and
// never write anywhere but dst, and only the two binary names there.
func FuzzUnpack(f *testing.F) {
	f.Add(tarball(f, entry{name: "ipfs-cluster-service/ipfs-cluster-service", typeflag: tar.TypeReg, body: "\x7fELF"}))
	f.Add(tarball(f, entry{name: "../escape", typeflag: tar.TypeReg, body: "x"}))
	f.Add(tarball(f, entry{name: "ipfs-cluster-ctl/ipfs-cluster-ctl", typeflag: tar.TypeSymlink, link: "/etc/passwd"}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		in := filepath.Join(root, "in")
		dst := filepath.Join(root, "dst")
		for _, d := range []string{in, dst} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		src := filepath.Join(in, "artifact.tar.gz")
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Unpack(context.Background(), []string{src}, dst)
		if err == nil && b.Service != filepath.Join(dst, ServiceName) {
			t.Fatalf("service path %q outside the expected place", b.Service)
		}
		err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			switch p {
			case root, in, dst, src, filepath.Join(dst, ServiceName), filepath.Join(dst, CtlName):
				return nil
			}
			t.Errorf("unexpected file written: %s", p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
