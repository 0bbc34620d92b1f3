//go:build linux

package control

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// dialEnv makes this test binary, run again as another user, a client of
// the socket it names (see TestPeerCredHelper).
const dialEnv = "UPGRADED_CONTROL_TEST_DIAL"

// TestPeerCredHelper is not a test on its own: it is the client run as
// another user by TestControlSocketRefusesOtherUsers, and does nothing
// unless dialEnv is set.
func TestPeerCredHelper(t *testing.T) {
	sock := os.Getenv(dialEnv)
	if sock == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := NewClient(sock).Status(ctx); err != nil {
		fmt.Printf("REFUSED uid=%d: %v\n", os.Getuid(), err)
		return
	}
	fmt.Printf("ADMITTED uid=%d\n", os.Getuid())
}

// TestControlSocketRefusesOtherUsers: with the socket's and its folder's
// modes loosened to let anyone connect, a client of another uid is still
// refused, while the daemon's own user is served.
func TestControlSocketRefusesOtherUsers(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl") // short: a unix socket path is limited to about 100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	s, err := Listen(sock, plainBackend{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	// The mistake the peer-credential check guards against.
	for path, mode := range map[string]os.FileMode{dir: 0o755, sock: 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := NewClient(sock).Status(ctx); err != nil {
		t.Fatalf("the daemon's own user was refused: %v", err)
	}

	if os.Geteuid() != 0 {
		// Without root no process of another uid can be made: prove the same
		// check on a listener owned by another uid instead.
		refusedByAnotherOwner(t, dir)
		return
	}
	out := runAsNobody(t, ctx, dir, sock)
	if !strings.HasPrefix(out, "REFUSED uid=65534") {
		t.Fatalf("a client of uid 65534 was not refused:\n%s", out)
	}
	// The server goes on serving its owner after a refusal.
	if _, err := NewClient(sock).Status(ctx); err != nil {
		t.Fatalf("owner refused after a stranger: %v", err)
	}
}

// refusedByAnotherOwner checks that a listener owned by the next uid
// refuses this process.
func refusedByAnotherOwner(t *testing.T, dir string) {
	t.Helper()
	raw, err := net.Listen("unix", filepath.Join(dir, "o.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln := &ownerListener{Listener: raw, uid: os.Geteuid() + 1, log: zaptest.NewLogger(t)}
	admitted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			admitted <- c
		}
		close(admitted)
	}()
	c, err := net.Dial("unix", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("want the connection closed by the server, got %v", err)
	}
	raw.Close()
	if c, ok := <-admitted; ok {
		c.Close()
		t.Fatal("a connection of another uid was admitted")
	}
}

// runAsNobody runs this test binary's TestPeerCredHelper as uid/gid 65534
// against sock and returns its output.
func runAsNobody(t *testing.T, ctx context.Context, dir, sock string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper.test") // the build folder is not readable by others
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestPeerCredHelper$", "-test.v=false")
	cmd.Env = append(os.Environ(), dialEnv+"="+sock)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid 65534: %v\n%s", err, b)
	}
	return string(b)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestPeerCredOfAConnection: the credentials read are the connecting
// process's own.
func TestPeerCredOfAConnection(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cred, err := peerCred(sc)
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Uid) != os.Geteuid() || int(cred.Pid) != os.Getpid() {
		t.Fatalf("credentials uid %d pid %d, want %d %d", cred.Uid, cred.Pid, os.Geteuid(), os.Getpid())
	}
}
