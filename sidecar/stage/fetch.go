// Package stage brings an upgrade's artifacts onto this host: it fetches them
// with their sha256 checked, finds the cluster binaries inside, and proves the
// staged service binary is the version the plan asked for.
package stage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Artifact is one file of an upgrade, as announced by the operator.
type Artifact struct {
	// Source is a local path, a file:// URL, an http(s):// URL, or an
	// /ipfs/CID[/path] read through the IPFS gateway (see WithGateway).
	Source string
	// SHA256 is the hex digest the fetched bytes must have; it is mandatory.
	SHA256 string
}

// Errors callers branch on: a mismatch or an oversize artifact will not get
// better by retrying, while a network error may.
var (
	ErrChecksumMismatch = errors.New("sha256 mismatch")
	ErrTooLarge         = errors.New("artifact larger than the size limit")
)

// DefaultMaxSize bounds a fetched artifact; a release tarball is a few tens
// of megabytes, so this leaves room without letting a bad source fill a disk.
const DefaultMaxSize int64 = 1 << 30

// DefaultGateway is the local IPFS gateway used for /ipfs/ sources.
const DefaultGateway = "http://127.0.0.1:8080"

type options struct {
	client  *http.Client
	gateway string
	maxSize int64
	// wrapWriter lets tests inject write failures (a full disk) without
	// needing a full file system.
	wrapWriter func(io.Writer) io.Writer
}

// Option changes how Fetch works.
type Option func(*options)

// WithHTTPClient sets the client used for http(s) and /ipfs/ sources.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithGateway sets the IPFS gateway base URL for /ipfs/ sources.
func WithGateway(base string) Option { return func(o *options) { o.gateway = base } }

// WithMaxSize sets the largest artifact Fetch accepts, in bytes.
func WithMaxSize(n int64) Option { return func(o *options) { o.maxSize = n } }

// Fetch streams the artifact into dir under a temporary name, hashing as it
// goes, checks its sha256 and only then gives it its final name (the base name
// of the source), which it returns. On any error nothing is left behind.
func Fetch(ctx context.Context, a Artifact, dir string, opts ...Option) (string, error) {
	o := options{client: http.DefaultClient, gateway: DefaultGateway, maxSize: DefaultMaxSize}
	for _, opt := range opts {
		opt(&o)
	}
	if o.wrapWriter == nil {
		o.wrapWriter = diskFullHook() // test hook, see DiskFullFileEnv
	}
	want, err := parseDigest(a.SHA256)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", a.Source, err)
	}
	name, err := TargetName(a.Source)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", a.Source, err)
	}
	body, err := open(ctx, a.Source, &o)
	if err != nil {
		return "", fmt.Errorf("fetching %s: %w", a.Source, err)
	}
	defer body.Close()
	final := filepath.Join(dir, name)
	if _, err := writeVerified(body, final, want, &o); err != nil {
		return "", fmt.Errorf("fetching %s into %s: %w", a.Source, dir, err)
	}
	return final, nil
}

// WriteVerified is Fetch's verify-then-rename discipline for bytes that come
// from elsewhere (another daemon): r is streamed into final through a
// temporary file beside it, and final appears only when the bytes are at most
// maxSize and their sha256 is sha256Hex. On any error nothing is left behind.
// It returns the number of bytes written.
func WriteVerified(r io.Reader, final, sha256Hex string, maxSize int64) (int64, error) {
	want, err := parseDigest(sha256Hex)
	if err != nil {
		return 0, err
	}
	o := options{maxSize: maxSize, wrapWriter: diskFullHook()}
	return writeVerified(r, final, want, &o)
}

// IsLocal reports whether src is read from this host's own disk (a path or a
// file:// URL) rather than over the network.
func IsLocal(src string) bool {
	return strings.HasPrefix(src, "file://") || (!strings.Contains(src, "://") && !strings.HasPrefix(src, "/ipfs/"))
}

func parseDigest(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("no sha256 given: every artifact must name its digest")
	}
	d, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(d) != sha256.Size {
		return nil, fmt.Errorf("sha256 %q is not 64 hex digits", s)
	}
	return d, nil
}

// TargetName is the file name Fetch gives an artifact: the source's base
// name, because Unpack tells the service binary from the ctl binary by name.
func TargetName(src string) (string, error) {
	p := src
	if u, err := url.Parse(src); err == nil && u.Scheme != "" {
		p = u.Path
	}
	base := path.Base(filepath.ToSlash(p))
	if base == "" || base == "." || base == ".." || base == "/" || strings.HasPrefix(base, ".") {
		return "", fmt.Errorf("cannot derive a file name from source %q", src)
	}
	return base, nil
}

// open returns the artifact's byte stream for each kind of source.
func open(ctx context.Context, src string, o *options) (io.ReadCloser, error) {
	switch {
	case strings.HasPrefix(src, "/ipfs/"):
		if o.gateway == "" {
			return nil, errors.New("an /ipfs/ source needs a gateway URL")
		}
		return httpGet(ctx, strings.TrimRight(o.gateway, "/")+src, o)
	case strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "https://"):
		return httpGet(ctx, src, o)
	case strings.HasPrefix(src, "file://"):
		u, err := url.Parse(src)
		if err != nil {
			return nil, fmt.Errorf("parsing file URL: %w", err)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("file URL names host %q; only local files can be read", u.Host)
		}
		return openLocal(u.Path, o)
	case strings.Contains(src, "://"):
		return nil, fmt.Errorf("unsupported source scheme in %q", src)
	default:
		return openLocal(src, o)
	}
}

func openLocal(p string, o *options) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Size() > o.maxSize {
		f.Close()
		return nil, fmt.Errorf("%s is %d bytes: %w (%d)", p, fi.Size(), ErrTooLarge, o.maxSize)
	}
	return f, nil
}

func httpGet(ctx context.Context, u string, o *options) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s answered %s: %s", u, resp.Status, strings.TrimSpace(string(snippet)))
	}
	if resp.ContentLength > o.maxSize {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s announces %d bytes: %w (%d)", u, resp.ContentLength, ErrTooLarge, o.maxSize)
	}
	return resp.Body, nil
}

// writeVerified copies r to a temporary file beside final, checks the digest
// and size, syncs, and renames; the temporary file is removed on any failure.
func writeVerified(r io.Reader, final string, want []byte, o *options) (n int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".part-*")
	if err != nil {
		return 0, describeWriteErr("creating temporary file", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	var w io.Writer = tmp
	if o.wrapWriter != nil {
		w = o.wrapWriter(w)
	}
	n, err = io.Copy(io.MultiWriter(w, h), io.LimitReader(r, o.maxSize+1))
	if err != nil {
		return n, describeWriteErr("copying", err)
	}
	if n > o.maxSize {
		return n, fmt.Errorf("%w (%d bytes)", ErrTooLarge, o.maxSize)
	}
	if got := h.Sum(nil); !equalDigest(got, want) {
		return n, fmt.Errorf("%w: got %x, want %x", ErrChecksumMismatch, got, want)
	}
	if err := tmp.Sync(); err != nil {
		return n, describeWriteErr("syncing", err)
	}
	if err := tmp.Close(); err != nil {
		return n, describeWriteErr("closing", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return n, fmt.Errorf("renaming into place: %w", err)
	}
	return n, syncDir(filepath.Dir(final))
}

func equalDigest(a, b []byte) bool { return bytes.Equal(a, b) }

// describeWriteErr names a full disk plainly, since operators act on it
// differently from other write failures; the original error stays wrapped.
func describeWriteErr(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%s: disk full (no space left on device): %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// syncDir makes a rename durable: the new directory entry must reach the
// disk, or a power cut could leave the file nameless.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
