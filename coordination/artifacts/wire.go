// Package artifacts shares an upgrade's artifacts among the daemons: for each
// artifact one host (the seeder, chosen from the plan with no message
// exchanged) fetches it from its source, and the others get it from any
// daemon that already holds it verified, over the daemons' private libp2p
// swarm, each copy checked against the sha256 before it is staged. So the
// bytes served by the source do not grow with the number of hosts.
//
// The protocol serves an artifact by its sha256 only, never by a path: a
// daemon serves only files whose sha256 it verified itself (Store).
package artifacts

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol is the stream protocol on which daemons serve artifacts.
const Protocol protocol.ID = "/upgraded/artifact/1.0.0"

// maxHeader bounds a request or an answer's header line.
const maxHeader = 4 << 10

// One request per stream: a JSON line naming the artifact. One answer: a
// JSON line with a code, then, when the code is codeOK, exactly Size bytes.
//
// WaitMS asks a daemon that does not hold the artifact yet to keep the
// request until it does (then it serves it) or until that many
// milliseconds passed (then it answers as it would have at once). The
// hosts of a plan use it to take the artifact down a tree, each waiting on
// one parent, instead of asking around every half second: at 100 hosts
// those asks were thousands of streams a second. A daemon that predates it
// ignores the field and answers at once, which the asker handles as before.
type request struct {
	SHA256 string `json:"sha256"`
	WaitMS int64  `json:"wait_ms,omitempty"`
}

type header struct {
	Code  string `json:"code"`
	Size  int64  `json:"size,omitempty"`
	Error string `json:"error,omitempty"`
}

const (
	codeOK         = "ok"
	codeNotHeld    = "not_held"    // neither held nor being fetched here
	codeFetching   = "fetching"    // being fetched from its source here now: ask again soon
	codeFailed     = "failed"      // this daemon's fetch from the source failed
	codeBusy       = "busy"        // held, but as many copies as allowed are being served
	codeBadRequest = "bad_request" // the request cannot be understood
	codeRefused    = "refused"     // the asking daemon is not of this cluster
)

// Errors a fetch from one peer ends with; the Sharer branches on them.
var (
	// ErrNotHeld: the peer neither holds the artifact nor is fetching it.
	ErrNotHeld = errors.New("the daemon does not hold this artifact")
	// ErrFetching: the peer is fetching the artifact from its source now.
	ErrFetching = errors.New("the daemon is fetching this artifact from its source")
	// ErrSourceFailed: the peer's own fetch from the source failed.
	ErrSourceFailed = errors.New("the daemon could not fetch this artifact from its source")
	// ErrBusy: the peer holds the artifact but serves as many copies as it allows.
	ErrBusy = errors.New("the daemon is serving as many copies as it allows")
	// ErrRefused: the peer refused the request (not of this cluster, or a bad request).
	ErrRefused = errors.New("the daemon refused the request")
	// ErrUnreachable: no stream could be opened to the peer.
	ErrUnreachable = errors.New("daemon unreachable")
)

func (h header) err() error {
	var base error
	switch h.Code {
	case codeOK:
		return nil
	case codeNotHeld:
		base = ErrNotHeld
	case codeFetching:
		base = ErrFetching
	case codeFailed:
		base = ErrSourceFailed
	case codeBusy:
		base = ErrBusy
	case codeBadRequest, codeRefused:
		base = ErrRefused
	default:
		return fmt.Errorf("unknown answer code %q", h.Code)
	}
	if h.Error == "" {
		return base
	}
	return fmt.Errorf("%w: %s", base, h.Error)
}

// readLine reads one JSON line of at most maxHeader bytes into v.
func readLine(r *bufio.Reader, v any) error {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return fmt.Errorf("header longer than %d bytes", maxHeader)
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// idleReader and idleWriter push the stream's deadline forward on every
// read or write: a transfer may take as long as it needs while it moves,
// and a peer that stops sending (or reading) for idle is cut off.
type idleReader struct {
	s    network.Stream
	r    io.Reader
	idle time.Duration
}

func (r idleReader) Read(p []byte) (int, error) {
	_ = r.s.SetReadDeadline(time.Now().Add(r.idle))
	return r.r.Read(p)
}

type idleWriter struct {
	s    network.Stream
	idle time.Duration
}

func (w idleWriter) Write(p []byte) (int, error) {
	_ = w.s.SetWriteDeadline(time.Now().Add(w.idle))
	return w.s.Write(p)
}
