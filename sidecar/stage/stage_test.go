package stage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// dirEntries lists the names in dir, so tests can prove nothing was left.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFetchEverySourceForm(t *testing.T) {
	content := []byte("#!/bin/sh\necho ipfs-cluster-service version 1.1.6\n")
	srcDir := t.TempDir()
	src := filepath.Join(srcDir, "ipfs-cluster-service")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/dl/ipfs-cluster-service", func(w http.ResponseWriter, r *http.Request) { w.Write(content) })
	mux.HandleFunc("/ipfs/bafyexample/ipfs-cluster-service", func(w http.ResponseWriter, r *http.Request) { w.Write(content) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	cases := []struct{ name, source string }{
		{"path", src},
		{"file URL", "file://" + src},
		{"http URL", srv.URL + "/dl/ipfs-cluster-service"},
		{"ipfs path through gateway", "/ipfs/bafyexample/ipfs-cluster-service"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			got, err := Fetch(testCtx(t), Artifact{Source: c.source, SHA256: digest(content)}, dir, WithGateway(srv.URL))
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if got != filepath.Join(dir, "ipfs-cluster-service") {
				t.Errorf("path = %s", got)
			}
			b, err := os.ReadFile(got)
			if err != nil || !bytes.Equal(b, content) {
				t.Errorf("content = %q, %v", b, err)
			}
			if names := dirEntries(t, dir); len(names) != 1 {
				t.Errorf("dir holds %v, want only the artifact", names)
			}
		})
	}
}

func TestFetchFailuresLeaveNothing(t *testing.T) {
	content := []byte("release bytes")
	srcDir := t.TempDir()
	src := filepath.Join(srcDir, "ipfs-cluster-service")
	os.WriteFile(src, content, 0o644)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write(content)
	}))
	defer srv.Close()
	// A port that was listening a moment ago and is now closed: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()

	wrong := digest([]byte("other bytes"))
	cases := []struct {
		name   string
		a      Artifact
		opts   []Option
		target error
		text   string
	}{
		{"wrong sha256 on a path", Artifact{src, wrong}, nil, ErrChecksumMismatch, ""},
		{"wrong sha256 over http", Artifact{srv.URL + "/ipfs-cluster-service", wrong}, nil, ErrChecksumMismatch, ""},
		{"empty sha256", Artifact{src, ""}, nil, nil, "no sha256"},
		{"malformed sha256", Artifact{src, "abc"}, nil, nil, "64 hex"},
		{"missing file", Artifact{filepath.Join(srcDir, "nope"), digest(content)}, nil, os.ErrNotExist, ""},
		{"http 404", Artifact{srv.URL + "/missing", digest(content)}, nil, nil, "404"},
		{"unreachable host", Artifact{"http://" + deadAddr + "/x", digest(content)}, nil, syscall.ECONNREFUSED, ""},
		{"too large", Artifact{src, digest(content)}, []Option{WithMaxSize(4)}, ErrTooLarge, ""},
		{"too large over http", Artifact{srv.URL + "/ipfs-cluster-service", digest(content)}, []Option{WithMaxSize(4)}, ErrTooLarge, ""},
		{"ipfs without gateway", Artifact{"/ipfs/bafy/x", digest(content)}, []Option{WithGateway("")}, nil, "gateway"},
		{"unknown scheme", Artifact{"ftp://example/x", digest(content)}, nil, nil, "unsupported"},
		{"disk full", Artifact{src, digest(content)}, []Option{func(o *options) { o.wrapWriter = fullDisk }}, syscall.ENOSPC, "disk full"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Fetch(testCtx(t), c.a, dir, c.opts...)
			if err == nil {
				t.Fatal("Fetch succeeded, want an error")
			}
			if c.target != nil && !errors.Is(err, c.target) {
				t.Errorf("error %v is not %v", err, c.target)
			}
			if c.text != "" && !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %q does not mention %q", err, c.text)
			}
			if names := dirEntries(t, dir); len(names) != 0 {
				t.Errorf("left behind %v", names)
			}
		})
	}
}

type fullWriter struct{}

func (fullWriter) Write([]byte) (int, error) {
	return 0, &os.PathError{Op: "write", Path: "artifact", Err: syscall.ENOSPC}
}

func fullDisk(io.Writer) io.Writer { return fullWriter{} }

type entry struct {
	name     string
	typeflag byte
	body     string
	size     int64 // header size when it differs from len(body)
	link     string
}

func tarball(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		if e.typeflag != tar.TypeReg {
			size = 0
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typeflag, Size: size, Mode: 0o644, Linkname: e.link}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.size == 0 {
			tw.Write([]byte(e.body))
		}
	}
	// An entry whose header claims more than it holds makes Close fail; the
	// archive is still readable up to that header, which is what the test needs.
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnpackReleaseTarball(t *testing.T) {
	in, dst := t.TempDir(), t.TempDir()
	tgz := tarball(t,
		entry{name: "ipfs-cluster-service/", typeflag: tar.TypeDir},
		entry{name: "ipfs-cluster-service/LICENSE", typeflag: tar.TypeReg, body: "license"},
		entry{name: "ipfs-cluster-service/ipfs-cluster-service", typeflag: tar.TypeReg, body: "\x7fELFservice"},
		entry{name: "./ipfs-cluster-ctl/ipfs-cluster-ctl", typeflag: tar.TypeReg, body: "\x7fELFctl"},
	)
	b, err := Unpack(testCtx(t), []string{writeFile(t, in, "ipfs-cluster_v1.1.6_linux-amd64.tar.gz", tgz)}, dst)
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	want := Binaries{Service: filepath.Join(dst, ServiceName), Ctl: filepath.Join(dst, CtlName)}
	if b != want {
		t.Fatalf("got %+v, want %+v", b, want)
	}
	for p, body := range map[string]string{b.Service: "\x7fELFservice", b.Ctl: "\x7fELFctl"} {
		got, _ := os.ReadFile(p)
		fi, err := os.Stat(p)
		if err != nil || string(got) != body || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %q mode %v err %v", p, got, fi.Mode(), err)
		}
	}
	if names := dirEntries(t, dst); len(names) != 2 {
		t.Errorf("dst holds %v; only the two binaries should be written", names)
	}
}

func TestUnpackBareBinaries(t *testing.T) {
	in, dst := t.TempDir(), filepath.Join(t.TempDir(), "unpacked") // created by Unpack
	svc := writeFile(t, in, "ipfs-cluster-service-1.1.6", []byte("\x7fELF..."))
	ctl := writeFile(t, in, "ipfs-cluster-ctl", []byte("#!/bin/sh\necho ctl\n"))
	b, err := Unpack(testCtx(t), []string{svc, ctl}, dst)
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if b.Service != filepath.Join(dst, ServiceName) || b.Ctl != filepath.Join(dst, CtlName) {
		t.Fatalf("got %+v", b)
	}
	got, _ := os.ReadFile(b.Ctl)
	if string(got) != "#!/bin/sh\necho ctl\n" {
		t.Errorf("ctl content %q", got)
	}
	// Service only: Ctl stays empty.
	dst2 := t.TempDir()
	b, err = Unpack(testCtx(t), []string{svc}, dst2)
	if err != nil || b.Ctl != "" || b.Service == "" {
		t.Errorf("service only: %+v, %v", b, err)
	}
}

func TestUnpackRefusals(t *testing.T) {
	svc := entry{name: "ipfs-cluster-service/ipfs-cluster-service", typeflag: tar.TypeReg, body: "\x7fELF"}
	cases := []struct {
		name  string
		files map[string][]byte
		text  string
	}{
		{"absolute path", map[string][]byte{"a.tar.gz": tarball(t, svc, entry{name: "/etc/passwd", typeflag: tar.TypeReg, body: "x"})}, `"/etc/passwd"`},
		{"dot dot", map[string][]byte{"a.tar.gz": tarball(t, entry{name: "ipfs-cluster-service/../../evil", typeflag: tar.TypeReg, body: "x"}, svc)}, `"ipfs-cluster-service/../../evil"`},
		{"symlink", map[string][]byte{"a.tar.gz": tarball(t, entry{name: "ipfs-cluster-service/ipfs-cluster-service", typeflag: tar.TypeSymlink, link: "/bin/sh"})}, "link"},
		{"hard link", map[string][]byte{"a.tar.gz": tarball(t, svc, entry{name: "x", typeflag: tar.TypeLink, link: "ipfs-cluster-service/ipfs-cluster-service"})}, "link"},
		{"char device", map[string][]byte{"a.tar.gz": tarball(t, svc, entry{name: "dev/null", typeflag: tar.TypeChar})}, `"dev/null"`},
		{"block device", map[string][]byte{"a.tar.gz": tarball(t, entry{name: "sda", typeflag: tar.TypeBlock}, svc)}, `"sda"`},
		{"fifo", map[string][]byte{"a.tar.gz": tarball(t, entry{name: "pipe", typeflag: tar.TypeFifo}, svc)}, `"pipe"`},
		{"oversize entry", map[string][]byte{"a.tar.gz": tarball(t, entry{name: "ipfs-cluster-service/ipfs-cluster-service", typeflag: tar.TypeReg, size: MaxBinarySize + 1})}, "exceeds"},
		{"no service binary", map[string][]byte{"a.tar.gz": tarball(t, entry{name: "ipfs-cluster-ctl/ipfs-cluster-ctl", typeflag: tar.TypeReg, body: "x"})}, "no ipfs-cluster-service"},
		{"two service binaries", map[string][]byte{"ipfs-cluster-service": []byte("#!/bin/sh\n"), "a.tar.gz": tarball(t, svc)}, "second"},
		{"not an executable", map[string][]byte{"notes.txt": []byte("hello")}, "neither"},
		{"corrupt gzip", map[string][]byte{"a.tar.gz": {0x1f, 0x8b, 0, 1, 2}}, "gzip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, dst := t.TempDir(), t.TempDir()
			var files []string
			for _, name := range []string{"ipfs-cluster-service", "notes.txt", "a.tar.gz"} {
				if b, ok := c.files[name]; ok {
					files = append(files, writeFile(t, in, name, b))
				}
			}
			_, err := Unpack(testCtx(t), files, dst)
			if err == nil {
				t.Fatal("Unpack succeeded, want a refusal")
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("error %q does not mention %q", err, c.text)
			}
			if names := dirEntries(t, dst); len(names) != 0 {
				t.Errorf("left in dst: %v", names)
			}
		})
	}
}

func TestVerifyVersion(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	real116 := script("svc116", `[ "$1" = "--version" ] && echo "ipfs-cluster-service version 1.1.6" && exit 0; exit 2`)
	noVersion := script("svcnone", `echo "hello"`)
	failing := script("svcfail", `echo "boom" >&2; exit 1`)
	cases := []struct {
		name, bin, version, text string
	}{
		{"match", real116, "1.1.6", ""},
		{"match with v prefix", real116, "v1.1.6", ""},
		{"mismatch", real116, "1.0.8", "is version 1.1.6"},
		{"no version printed", noVersion, "1.1.6", "no version"},
		{"binary fails", failing, "1.1.6", "boom"},
		{"binary missing", filepath.Join(dir, "absent"), "1.1.6", "absent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := VerifyVersion(testCtx(t), c.bin, c.version)
			if c.text == "" {
				if err != nil {
					t.Fatalf("VerifyVersion: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("error %v, want one mentioning %q", err, c.text)
			}
		})
	}
}

func TestParseVersionOfEveryRelease(t *testing.T) {
	for _, rel := range []string{"0.14.5-crdt", "1.0.8-raft", "1.1.6-raft"} {
		b, err := os.ReadFile(filepath.Join("../../testdata/samples", rel, "service-version.txt"))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseVersion(string(b))
		if want := strings.SplitN(rel, "-", 2)[0]; !ok || got != want {
			t.Errorf("%s: parsed %q, want %q", rel, got, want)
		}
	}
}
