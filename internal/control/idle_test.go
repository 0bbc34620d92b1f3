package control

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// A client that keeps its connection open after a request (as an
// http.Client made per call does) has it closed by the daemon after the idle
// timeout, instead of holding a goroutine and buffers in the daemon forever.
func TestIdleConnectionIsClosed(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	s, err := Listen(path, plainBackend{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.IdleTimeout = 200 * time.Millisecond
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Close() })

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: upgraded\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("reading the status answer: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("status answer %d (close %v), want 200 on a kept connection", resp.StatusCode, resp.Close)
	}

	// Idle now: the daemon must end the connection well before 10 s.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = r.ReadByte()
	if !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read gave %v after %v, want the daemon to close it (EOF)", err, time.Since(start).Round(time.Millisecond))
	}
}
