package stage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Names of the cluster binaries, in a release tarball (dir/name) and in dst.
const (
	ServiceName = "ipfs-cluster-service"
	CtlName     = "ipfs-cluster-ctl"
)

// MaxBinarySize bounds one extracted binary; real ones are well under 100 MB,
// so anything bigger is a hostile or broken archive.
const MaxBinarySize int64 = 512 << 20

// maxEntries bounds the entries of one tarball, so that a crafted archive of
// endless empty entries cannot keep Unpack busy.
const maxEntries = 10000

// Binaries are the cluster binaries of one version, ready to install.
type Binaries struct {
	Service string // path of ipfs-cluster-service
	Ctl     string // path of ipfs-cluster-ctl; "" when the artifacts had none
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	elfMagic  = []byte{0x7f, 'E', 'L', 'F'}
)

// Unpack finds the cluster binaries among fetched artifacts and writes them
// into dst as ipfs-cluster-service and ipfs-cluster-ctl (mode 0755). An
// artifact is a bare executable (ELF or #! script; it is the ctl binary when
// its name contains "ipfs-cluster-ctl", the service binary otherwise) or a
// release tarball (gzip) holding ipfs-cluster-service/ipfs-cluster-service
// and/or ipfs-cluster-ctl/ipfs-cluster-ctl. Kind is told by content, not by
// name, so an /ipfs/CID artifact needs no extension. dst is created if needed. A tarball with any
// absolute, "..", link, device or oversize entry is refused as a whole.
func Unpack(ctx context.Context, files []string, dst string) (Binaries, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return Binaries{}, describeWriteErr("creating "+dst, err)
	}
	var b Binaries
	var written []string
	ok := false
	defer func() {
		if !ok {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return Binaries{}, err
		}
		got, err := unpackOne(ctx, f, dst, &b)
		written = append(written, got...)
		if err != nil {
			return Binaries{}, fmt.Errorf("unpacking %s: %w", f, err)
		}
	}
	if b.Service == "" {
		return Binaries{}, fmt.Errorf("no %s among the artifacts %v", ServiceName, files)
	}
	ok = true
	return b, nil
}

// unpackOne handles one artifact and returns the paths it wrote.
func unpackOne(ctx context.Context, file, dst string, b *Binaries) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return unpackTarball(ctx, br, dst, b)
	case bytes.HasPrefix(head, elfMagic), bytes.HasPrefix(head, []byte("#!")):
		role := ServiceName
		if strings.Contains(filepath.Base(file), CtlName) {
			role = CtlName
		}
		p, err := place(br, dst, role, b)
		if p == "" {
			return nil, err
		}
		return []string{p}, err
	default:
		return nil, errors.New("neither an executable (ELF, #!) nor a gzip tarball")
	}
}

func unpackTarball(ctx context.Context, r io.Reader, dst string, b *Binaries) ([]string, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("reading gzip: %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var written []string
	for i := 0; ; i++ {
		if i >= maxEntries {
			return written, fmt.Errorf("more than %d entries in tarball", maxEntries)
		}
		if err := ctx.Err(); err != nil {
			return written, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return written, nil
		}
		if err != nil {
			return written, fmt.Errorf("reading tarball: %w", err)
		}
		role, err := checkEntry(hdr)
		if err != nil {
			return written, err
		}
		if role == "" {
			continue
		}
		p, err := place(tr, dst, role, b)
		if p != "" {
			written = append(written, p)
		}
		if err != nil {
			return written, fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
}

// checkEntry refuses hostile entries and says which binary, if any, the entry
// is. Only entries that are the binaries are ever written.
func checkEntry(hdr *tar.Header) (string, error) {
	name := hdr.Name
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || filepath.IsAbs(name) {
		return "", fmt.Errorf("entry %q: absolute or malformed path refused", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q: path with \"..\" refused", name)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink, tar.TypeLink:
		return "", fmt.Errorf("entry %q: link to %q refused", name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return "", fmt.Errorf("entry %q: device or fifo refused", name)
	case tar.TypeXGlobalHeader:
		return "", nil
	default:
		return "", fmt.Errorf("entry %q: unsupported type %q refused", name, hdr.Typeflag)
	}
	if hdr.Size < 0 || hdr.Size > MaxBinarySize {
		return "", fmt.Errorf("entry %q: size %d exceeds the limit of %d bytes", name, hdr.Size, MaxBinarySize)
	}
	if hdr.Typeflag != tar.TypeReg {
		return "", nil
	}
	switch path.Clean(name) {
	case ServiceName + "/" + ServiceName:
		return ServiceName, nil
	case CtlName + "/" + CtlName:
		return CtlName, nil
	}
	return "", nil
}

// place writes one binary into dst under its role's name, through a temporary
// file, and records it in b. It returns the final path once that exists.
func place(r io.Reader, dst, role string, b *Binaries) (string, error) {
	slot := &b.Service
	if role == CtlName {
		slot = &b.Ctl
	}
	if *slot != "" {
		return "", fmt.Errorf("a second %s among the artifacts", role)
	}
	final := filepath.Join(dst, role)
	tmp, err := os.CreateTemp(dst, "."+role+".tmp-*")
	if err != nil {
		return "", describeWriteErr("creating "+role, err)
	}
	n, err := io.Copy(tmp, io.LimitReader(r, MaxBinarySize+1))
	if err == nil && n > MaxBinarySize {
		err = fmt.Errorf("%s larger than %d bytes", role, MaxBinarySize)
	}
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), final)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", describeWriteErr("writing "+role, err)
	}
	*slot = final
	return final, nil
}
