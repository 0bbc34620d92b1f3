package artifacts

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/upgraded/upgraded/sidecar/stage"
)

// Download asks daemon p for the artifact with the given sha256 and stages it
// as final through stage.WriteVerified: final appears only when the bytes
// are at most maxSize and match the sha256 (else the error wraps
// stage.ErrChecksumMismatch or stage.ErrTooLarge and nothing is left).
// requestTimeout bounds reaching p and its answer; idle bounds each pause of
// the transfer. It returns the bytes received.
func Download(ctx context.Context, h host.Host, p peer.ID, sha, final string, maxSize int64, requestTimeout, idle time.Duration) (int64, error) {
	return download(ctx, h, p, sha, final, maxSize, requestTimeout, idle, 0)
}

// download is Download asking p to wait up to wait for the artifact when it
// does not hold it yet (request.WaitMS); the answer is then awaited that
// much longer.
func download(ctx context.Context, h host.Host, p peer.ID, sha, final string, maxSize int64, requestTimeout, idle, wait time.Duration) (int64, error) {
	if err := checkSHA(sha); err != nil {
		return 0, fmt.Errorf("asking %s for an artifact: %w", p, err)
	}
	octx, cancel := context.WithTimeout(ctx, requestTimeout)
	st, err := h.NewStream(octx, p, Protocol)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("%w: opening an artifact stream to %s: %w", ErrUnreachable, p, err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	_ = st.SetDeadline(time.Now().Add(requestTimeout + wait))
	if err := writeLine(st, request{SHA256: key(sha), WaitMS: wait.Milliseconds()}); err != nil {
		return 0, fmt.Errorf("sending the artifact request to %s: %w: %w", p, errNoAnswer, err)
	}
	if err := st.CloseWrite(); err != nil {
		return 0, fmt.Errorf("sending the artifact request to %s: %w: %w", p, errNoAnswer, err)
	}
	br := bufio.NewReaderSize(st, maxHeader)
	var hd header
	if err := readLine(br, &hd); err != nil {
		return 0, fmt.Errorf("reading the answer of %s: %w: %w", p, errNoAnswer, err)
	}
	if err := hd.err(); err != nil {
		return 0, fmt.Errorf("artifact sha256 %s from %s: %w", sha, p, err)
	}
	if hd.Size < 0 || hd.Size > maxSize {
		_ = st.Reset()
		return 0, fmt.Errorf("artifact sha256 %s from %s: announced %d bytes: %w (%d)", sha, p, hd.Size, stage.ErrTooLarge, maxSize)
	}
	body := io.LimitReader(idleReader{s: st, r: br, idle: idle}, hd.Size)
	n, err := stage.WriteVerified(body, final, sha, maxSize)
	if err != nil {
		_ = st.Reset()
		return n, fmt.Errorf("staging artifact sha256 %s from %s: %w", sha, p, err)
	}
	return n, nil
}
