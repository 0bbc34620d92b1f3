package raftnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/zap"
)

// streamTransport is raft's Transport on libp2p streams, one request at a
// time per stream, idle streams kept for reuse.
//
// It replaces hashicorp/raft's NetworkTransport (over the same streams)
// because of memory: that transport gives every connection it keeps a
// 256 KiB send buffer, and a leader keeps two or three per member. Idle, the
// leader of 50 daemons held 19 MB in those buffers (52 MB resident against
// 33 MB for the others) and the leader of 100 daemons 92 MB. Buffers here
// are 4 KiB (bufio writes larger messages straight through), and a stream
// has them only while it writes a request or reads an answer: they are
// borrowed from a pool for each, the answer's once its first byte is in, so
// neither the two idle streams a leader keeps to each member nor a request
// waiting for its answer hold any.
//
// Wire format, per request: one byte naming the RPC, the msgpack request,
// and for InstallSnapshot the snapshot's Size bytes. Per answer: a msgpack
// error string ("" for none) and the msgpack response. Pipelining is not
// offered: raft then replicates with one request in flight per member, which
// its batching of up to MaxAppendEntries entries makes enough for plans.
type streamTransport struct {
	h         host.Host
	log       *zap.Logger
	timeout   time.Duration // per request; a snapshot gets one per snapshotChunk
	serveIdle time.Duration // serveIdleTimeout, but for tests
	rpcs      chan raft.RPC
	// hold, when set (before raft starts), holds appends to non-voters
	// until the voters committed them (holdback.go).
	hold *holdback
	// sending, for tests, sees every append just before it goes.
	sending atomic.Pointer[func(id raft.ServerID, args *raft.AppendEntriesRequest)]

	mu        sync.Mutex
	heartbeat func(raft.RPC)
	idle      map[peer.ID][]idleStream // kept for reuse, at most maxIdle each, newest last
	serving   map[network.Stream]struct{}
	closed    bool
	done      chan struct{}
}

const (
	// maxIdle is how many idle streams to one member are kept: raft's
	// heartbeat and its replication each use one at the same time.
	maxIdle = 2
	// idleStreamTTL is how long an unused stream is kept. A leader uses its
	// streams to every member several times a second; once it is no longer
	// leader nothing does. Kept, they stayed open for good: at N=100 after
	// the four or five elections of a run, each former leader held two
	// streams to each of the 99 others, and each daemon one goroutine
	// serving each of them.
	idleStreamTTL = 20 * time.Second
	// serveIdleTimeout is how long a served stream may wait for its next
	// request: past it the side that keeps it has long forgotten it (see
	// idleStreamTTL), or is a daemon that keeps its streams for good.
	serveIdleTimeout = 3 * idleStreamTTL
	// streamBuffer is the read and write buffer of a stream.
	streamBuffer = 4 << 10
	// snapshotChunk is the amount of snapshot an InstallSnapshot gets one
	// more timeout for.
	snapshotChunk = 256 << 10
)

// RPC kinds on the wire.
const (
	rpcAppendEntries byte = iota + 1
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

var errTransportClosed = errors.New("raft transport closed")

// idleStream is a stream kept for reuse and when it was last used.
type idleStream struct {
	s    network.Stream
	used time.Time
}

// msgpackHandle is every codec's: a handle caches what it learnt of each
// type it met, and is safe for concurrent use once configured.
var msgpackHandle = &codec.MsgpackHandle{}

// rpcCodec is the buffered reader, writer and codecs that carry one request
// and its answer on a stream.
type rpcCodec struct {
	r   *bufio.Reader
	w   *bufio.Writer
	dec *codec.Decoder
	enc *codec.Encoder
	pre prefixed // r's source when the first byte was read without it
}

// prefixed reads one byte already taken from r, then r.
type prefixed struct {
	first byte
	taken bool
	r     io.Reader
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !p.taken {
		p.taken = true
		b[0] = p.first
		return 1, nil
	}
	return p.r.Read(b)
}

var codecs = sync.Pool{New: func() any {
	c := &rpcCodec{r: bufio.NewReaderSize(nil, streamBuffer), w: bufio.NewWriterSize(nil, streamBuffer)}
	c.dec = codec.NewDecoder(c.r, msgpackHandle)
	c.enc = codec.NewEncoder(c.w, msgpackHandle)
	return c
}}

// borrowCodec returns a codec on s, to be given back with done.
func borrowCodec(s io.ReadWriter) *rpcCodec {
	c := codecs.Get().(*rpcCodec)
	c.reset(s, s)
	return c
}

// borrowCodecAfter returns a codec on s whose first byte, first, was read
// from s already.
func borrowCodecAfter(s io.ReadWriter, first byte) *rpcCodec {
	c := codecs.Get().(*rpcCodec)
	c.pre = prefixed{first: first, r: s}
	c.reset(&c.pre, s)
	return c
}

func (c *rpcCodec) reset(r io.Reader, w io.Writer) {
	c.r.Reset(r)
	c.w.Reset(w)
	c.dec.Reset(c.r)
	c.enc.Reset(c.w)
}

// done gives c back for another stream. Nothing may follow an answer (nor a
// request, whose sender waits for the answer) before the next request, so
// buffered bytes mean the other side broke the protocol: they would be lost
// with the buffer, and the stream must not be used again.
func (c *rpcCodec) done() error {
	extra := c.r.Buffered()
	c.r.Reset(nil)
	c.w.Reset(nil)
	c.pre = prefixed{}
	codecs.Put(c)
	if extra > 0 {
		return fmt.Errorf("%d unexpected bytes after a raft message", extra)
	}
	return nil
}

func newStreamTransport(h host.Host, timeout time.Duration, log *zap.Logger) *streamTransport {
	t := &streamTransport{h: h, log: log, timeout: timeout, serveIdle: serveIdleTimeout, rpcs: make(chan raft.RPC),
		idle: map[peer.ID][]idleStream{}, serving: map[network.Stream]struct{}{}, done: make(chan struct{})}
	h.SetStreamHandler(rpcProtocol, t.serve)
	go t.expireIdle(idleStreamTTL / 4)
	return t
}

// expireIdle closes, every period until the transport closes, the idle
// streams unused for idleStreamTTL.
func (t *streamTransport) expireIdle(period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case now := <-tick.C:
			for _, s := range t.takeExpired(now.Add(-idleStreamTTL)) {
				s.Close()
			}
		}
	}
}

// takeExpired removes from the idle streams those last used before cutoff
// and returns them.
func (t *streamTransport) takeExpired(cutoff time.Time) []network.Stream {
	t.mu.Lock()
	defer t.mu.Unlock()
	var expired []network.Stream
	for id, ss := range t.idle {
		// Oldest first: the streams taken for requests are the newest.
		n := 0
		for n < len(ss) && ss[n].used.Before(cutoff) {
			expired = append(expired, ss[n].s)
			n++
		}
		switch {
		case n == len(ss):
			delete(t.idle, id)
		case n > 0:
			t.idle[id] = slices.Delete(ss, 0, n)
		}
	}
	return expired
}

// Consumer implements raft.Transport.
func (t *streamTransport) Consumer() <-chan raft.RPC { return t.rpcs }

// LocalAddr implements raft.Transport: a daemon's raft address is its peer ID.
func (t *streamTransport) LocalAddr() raft.ServerAddress {
	return raft.ServerAddress(t.h.ID().String())
}

// AppendEntriesPipeline implements raft.Transport; see the type's comment.
func (t *streamTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries implements raft.Transport.
func (t *streamTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if t.hold != nil {
		t.hold.hold(id, args)
	}
	if f := t.sending.Load(); f != nil {
		(*f)(id, args)
	}
	return t.call(target, rpcAppendEntries, args, nil, 0, resp)
}

// RequestVote implements raft.Transport.
func (t *streamTransport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(target, rpcRequestVote, args, nil, 0, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (t *streamTransport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.call(target, rpcRequestPreVote, args, nil, 0, resp)
}

// InstallSnapshot implements raft.Transport.
func (t *streamTransport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.call(target, rpcInstallSnapshot, args, data, args.Size, resp)
}

// TimeoutNow implements raft.Transport.
func (t *streamTransport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.call(target, rpcTimeoutNow, args, nil, 0, resp)
}

// EncodePeer implements raft.Transport.
func (t *streamTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

// DecodePeer implements raft.Transport.
func (t *streamTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// SetHeartbeatHandler implements raft.Transport: heartbeats are handed to
// cb directly, not queued behind log appends on the consumer channel.
func (t *streamTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.mu.Lock()
	t.heartbeat = cb
	t.mu.Unlock()
}

// Close implements raft.WithClose: no more requests are sent or served.
func (t *streamTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	idle, serving := t.idle, t.serving
	t.idle, t.serving = map[peer.ID][]idleStream{}, map[network.Stream]struct{}{}
	t.mu.Unlock()
	t.h.RemoveStreamHandler(rpcProtocol)
	for _, ss := range idle {
		for _, s := range ss {
			s.s.Reset()
		}
	}
	for s := range serving {
		s.Reset()
	}
	return nil
}

// call sends one request to target and decodes its answer into resp.
func (t *streamTransport) call(target raft.ServerAddress, kind byte, args any, data io.Reader, size int64, resp any) error {
	id, err := peer.Decode(string(target))
	if err != nil {
		return fmt.Errorf("raft address %q is not a peer ID: %w", target, err)
	}
	timeout := t.timeout
	if n := size / snapshotChunk; n > 1 {
		timeout *= time.Duration(n)
	}
	s, reused, err := t.stream(id, timeout, false)
	if err != nil {
		return err
	}
	err = t.roundTrip(s, timeout, kind, args, data, size, resp)
	if err != nil && reused && data == nil {
		// The member may have restarted since the stream was last used, which
		// ended it. Raft's requests can be repeated (a snapshot's data cannot
		// be read twice): try once more on a new stream rather than report a
		// failure that makes raft back off from a healthy member.
		s.Reset()
		if s, _, err = t.stream(id, timeout, true); err != nil {
			return err
		}
		err = t.roundTrip(s, timeout, kind, args, data, size, resp)
	}
	if err != nil {
		s.Reset()
		return fmt.Errorf("raft request to %s: %w", id, err)
	}
	t.release(id, s)
	return nil
}

func (t *streamTransport) roundTrip(s network.Stream, timeout time.Duration, kind byte, args any, data io.Reader, size int64, resp any) error {
	if timeout > 0 {
		if err := s.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
	}
	c := borrowCodec(s)
	err := c.send(kind, args, data, size)
	if doneErr := c.done(); err == nil {
		err = doneErr
	}
	if err != nil {
		return err // the stream is reset: nothing c held of it is lost
	}
	// Waiting for the answer takes no buffer: the codec is borrowed again
	// once its first byte is in. A leader's heartbeats to every member are
	// in flight together, and on a loaded machine an answer takes a while.
	var first [1]byte
	if _, err := io.ReadFull(s, first[:]); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	c = borrowCodecAfter(s, first[0])
	err = c.receive(resp)
	if doneErr := c.done(); err == nil {
		err = doneErr
	}
	if err != nil {
		return err
	}
	return s.SetDeadline(time.Time{})
}

// send writes one request.
func (c *rpcCodec) send(kind byte, args any, data io.Reader, size int64) error {
	if err := c.w.WriteByte(kind); err != nil {
		return err
	}
	if err := c.enc.Encode(args); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if data != nil {
		if n, err := io.CopyN(c.w, data, size); err != nil {
			return fmt.Errorf("sending snapshot (%d of %d bytes): %w", n, size, err)
		}
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return nil
}

// receive reads the answer to a request into resp.
func (c *rpcCodec) receive(resp any) error {
	var remote string
	if err := c.dec.Decode(&remote); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if err := c.dec.Decode(resp); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if remote != "" {
		return errors.New(remote)
	}
	return nil
}

// stream returns an idle stream to id (reused), unless fresh, or opens one.
func (t *streamTransport) stream(id peer.ID, timeout time.Duration, fresh bool) (s network.Stream, reused bool, err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, false, errTransportClosed
	}
	if ss := t.idle[id]; len(ss) > 0 && !fresh {
		s := ss[len(ss)-1].s
		t.idle[id] = ss[:len(ss)-1]
		t.mu.Unlock()
		return s, true, nil
	}
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, time.Second))
	defer cancel()
	s, err = t.h.NewStream(ctx, id, rpcProtocol)
	if err != nil {
		return nil, false, fmt.Errorf("opening a raft stream to %s: %w", id, err)
	}
	return s, false, nil
}

// release keeps s for the next request to id, or closes it.
func (t *streamTransport) release(id peer.ID, s network.Stream) {
	t.mu.Lock()
	if !t.closed && len(t.idle[id]) < maxIdle {
		t.idle[id] = append(t.idle[id], idleStream{s: s, used: time.Now()})
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	s.Close()
}

// serve answers the requests of one stream until it ends.
func (t *streamTransport) serve(s network.Stream) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		s.Reset()
		return
	}
	t.serving[s] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.serving, s)
		t.mu.Unlock()
	}()
	var kind [1]byte
	for {
		// Waiting for the next request takes no buffer: the codec is
		// borrowed once its first byte is in.
		t.mu.Lock()
		wait := t.serveIdle
		t.mu.Unlock()
		err := s.SetReadDeadline(time.Now().Add(wait))
		if err == nil {
			_, err = io.ReadFull(s, kind[:])
		}
		if err == nil {
			err = s.SetReadDeadline(time.Time{}) // a snapshot may take long to read
		}
		more := false
		if err == nil {
			c := borrowCodec(s)
			more, err = t.serveOne(c, kind[0])
			if doneErr := c.done(); err == nil && more {
				err = doneErr
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, errTransportClosed) {
				t.log.Debug("raft stream ended", zap.Stringer("peer", s.Conn().RemotePeer()), zap.Error(err))
			}
			s.Reset()
			return
		}
		if !more {
			s.Close()
			return
		}
	}
}

// serveOne reads the request of this kind, hands it to raft and writes the
// answer. It reports whether the stream can carry another request.
func (t *streamTransport) serveOne(c *rpcCodec, kind byte) (more bool, err error) {
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{RespChan: respCh}
	heartbeat := false
	var snapshot *io.LimitedReader
	switch kind {
	case rpcAppendEntries:
		var req *raft.AppendEntriesRequest
		req, err = decodeRequest[raft.AppendEntriesRequest](c.dec)
		rpc.Command, heartbeat = req, isHeartbeat(req)
	case rpcRequestVote:
		rpc.Command, err = decodeRequest[raft.RequestVoteRequest](c.dec)
	case rpcRequestPreVote:
		rpc.Command, err = decodeRequest[raft.RequestPreVoteRequest](c.dec)
	case rpcTimeoutNow:
		rpc.Command, err = decodeRequest[raft.TimeoutNowRequest](c.dec)
	case rpcInstallSnapshot:
		var req *raft.InstallSnapshotRequest
		req, err = decodeRequest[raft.InstallSnapshotRequest](c.dec)
		snapshot = &io.LimitedReader{R: c.r, N: req.Size}
		rpc.Command, rpc.Reader = req, snapshot
	default:
		return false, fmt.Errorf("unknown raft request kind %d", kind)
	}
	if err != nil {
		return false, fmt.Errorf("reading a raft request: %w", err)
	}
	t.mu.Lock()
	hb := t.heartbeat
	t.mu.Unlock()
	if heartbeat && hb != nil {
		hb(rpc)
	} else {
		select {
		case t.rpcs <- rpc:
		case <-t.done:
			return false, errTransportClosed
		}
	}
	var resp raft.RPCResponse
	select {
	case resp = <-respCh:
	case <-t.done:
		return false, errTransportClosed
	}
	remote := ""
	if resp.Error != nil {
		remote = resp.Error.Error()
	}
	if err := c.enc.Encode(remote); err != nil {
		return false, err
	}
	if err := c.enc.Encode(resp.Response); err != nil {
		return false, err
	}
	if err := c.w.Flush(); err != nil {
		return false, err
	}
	// A snapshot raft did not read to its end leaves the stream unusable.
	return snapshot == nil || snapshot.N == 0, nil
}

func decodeRequest[T any](dec *codec.Decoder) (*T, error) {
	req := new(T)
	return req, dec.Decode(req)
}

// isHeartbeat tells raft's heartbeat (an append with nothing but the
// leader's term and identity) from the appends it must order.
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	return req.Term != 0 && len(req.Addr) > 0 && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}
