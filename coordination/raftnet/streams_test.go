package raftnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/network"
	"go.uber.org/zap/zaptest"

	"github.com/upgraded/upgraded/coordination/p2p"
)

// transportPair is two swarm nodes with a streamTransport each, b connected to a.
func transportPair(t *testing.T) (a, b *streamTransport) {
	t.Helper()
	log := zaptest.NewLogger(t)
	node := func(dir string, bootstrap []string) *p2p.Node {
		n, err := p2p.New(context.Background(), p2p.Config{IdentityFile: filepath.Join(dir, "identity.key"),
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Secret: secret(7), Bootstrap: bootstrap, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	na := node(t.TempDir(), nil)
	var addrs []string
	for _, ma := range na.Addrs() {
		addrs = append(addrs, ma.String())
	}
	nb := node(t.TempDir(), addrs)
	a, b = newStreamTransport(na.Host, 5*time.Second, log), newStreamTransport(nb.Host, 5*time.Second, log)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// answer serves t's consumer with fn until the test ends.
func answer(t *testing.T, tr *streamTransport, fn func(raft.RPC)) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case rpc := <-tr.Consumer():
				fn(rpc)
			case <-done:
				return
			}
		}
	}()
}

func TestStreamTransportCarriesEveryRequestKind(t *testing.T) {
	a, b := transportPair(t)
	snapshot := bytes.Repeat([]byte("snapshot "), 100_000) // several buffers' worth
	appended := time.Date(2026, 11, 25, 18, 0, 0, 123, time.UTC)
	answer(t, a, func(rpc raft.RPC) {
		switch req := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			if len(req.Entries) != 2 || string(req.Entries[1].Data) != "second" || !req.Entries[0].AppendedAt.Equal(appended) {
				rpc.Respond(nil, errors.New("entries garbled"))
				return
			}
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.Entries[1].Index, Success: true}, nil)
		case *raft.RequestVoteRequest:
			rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
		case *raft.RequestPreVoteRequest:
			rpc.Respond(&raft.RequestPreVoteResponse{Term: req.Term, Granted: true}, nil)
		case *raft.TimeoutNowRequest:
			rpc.Respond(&raft.TimeoutNowResponse{RPCHeader: req.RPCHeader}, nil)
		case *raft.InstallSnapshotRequest:
			got, err := io.ReadAll(rpc.Reader)
			rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil && bytes.Equal(got, snapshot)}, nil)
		default:
			rpc.Respond(nil, errors.New("unexpected request"))
		}
	})
	target := a.LocalAddr()
	var ae raft.AppendEntriesResponse
	err := b.AppendEntries("", target, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte(b.LocalAddr())}, Term: 4,
		PrevLogEntry: 7, Entries: []*raft.Log{{Index: 8, Term: 4, Data: []byte("first"), AppendedAt: appended}, {Index: 9, Term: 4, Data: []byte("second")}}}, &ae)
	if err != nil || !ae.Success || ae.LastLog != 9 || ae.Term != 4 {
		t.Fatalf("append entries: %+v, %v", ae, err)
	}
	var rv raft.RequestVoteResponse
	if err := b.RequestVote("", target, &raft.RequestVoteRequest{Term: 5}, &rv); err != nil || !rv.Granted || rv.Term != 5 {
		t.Fatalf("request vote: %+v, %v", rv, err)
	}
	var pv raft.RequestPreVoteResponse
	if err := b.RequestPreVote("", target, &raft.RequestPreVoteRequest{Term: 6}, &pv); err != nil || !pv.Granted || pv.Term != 6 {
		t.Fatalf("request pre-vote: %+v, %v", pv, err)
	}
	var tn raft.TimeoutNowResponse
	if err := b.TimeoutNow("", target, &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("b7")}}, &tn); err != nil || string(tn.ID) != "b7" {
		t.Fatalf("timeout now: %+v, %v", tn, err)
	}
	var is raft.InstallSnapshotResponse
	err = b.InstallSnapshot("", target, &raft.InstallSnapshotRequest{Term: 8, Size: int64(len(snapshot))}, &is, bytes.NewReader(snapshot))
	if err != nil || !is.Success {
		t.Fatalf("install snapshot of %d bytes: %+v, %v", len(snapshot), is, err)
	}
	// The stream that carried the snapshot carries the next request.
	if err := b.RequestVote("", target, &raft.RequestVoteRequest{Term: 9}, &rv); err != nil || rv.Term != 9 {
		t.Fatalf("request after a snapshot: %+v, %v", rv, err)
	}
	// A refusal reaches the caller as an error, and the stream stays usable.
	err = b.AppendEntries("", target, &raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 1, Entries: []*raft.Log{{Index: 2}}}, &ae)
	if err == nil || !strings.Contains(err.Error(), "entries garbled") {
		t.Fatalf("a refused append gave %v, want the remote's error", err)
	}
	if err := b.RequestVote("", target, &raft.RequestVoteRequest{Term: 10}, &rv); err != nil || rv.Term != 10 {
		t.Fatalf("request after a refusal: %+v, %v", rv, err)
	}
	if n := len(b.idle[a.h.ID()]); n != 1 {
		t.Errorf("%d idle streams after requests one at a time, want 1 reused", n)
	}
}

// Heartbeats skip the consumer: a follower busy applying a batch still
// answers its leader's heartbeats, or it calls an election.
func TestStreamTransportHandsHeartbeatsToTheirHandler(t *testing.T) {
	a, b := transportPair(t)
	beats := make(chan struct{}, 1)
	a.SetHeartbeatHandler(func(rpc raft.RPC) {
		beats <- struct{}{}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 3, Success: true}, nil)
	}) // nothing reads a.Consumer(): a request that went there would hang
	var resp raft.AppendEntriesResponse
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("b"), Addr: []byte(b.LocalAddr())}, Term: 3}
	if err := b.AppendEntries("", a.LocalAddr(), req, &resp); err != nil || !resp.Success {
		t.Fatalf("heartbeat: %+v, %v", resp, err)
	}
	select {
	case <-beats:
	default:
		t.Fatal("the heartbeat handler was not called")
	}
}

// Closing a transport ends the requests it serves and refuses new ones.
func TestStreamTransportCloseEndsItsRequests(t *testing.T) {
	a, b := transportPair(t)
	held := make(chan struct{})
	answer(t, a, func(raft.RPC) { close(held) }) // never answered
	errs := make(chan error, 1)
	go func() {
		var resp raft.RequestVoteResponse
		errs <- b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 1}, &resp)
	}()
	<-held
	a.Close()
	select {
	case err := <-errs:
		if err == nil {
			t.Fatal("a request whose server closed succeeded")
		}
	case <-time.After(4 * time.Second): // under the 5s request timeout
		t.Fatal("a request stayed blocked after its server closed")
	}
	b.Close()
	var resp raft.RequestVoteResponse
	if err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 1}, &resp); !errors.Is(err, errTransportClosed) {
		t.Fatalf("a request on a closed transport gave %v", err)
	}
}

// A member that was down while the leader compacted its log past what the
// member holds catches up by a snapshot sent over the transport.
func TestMemberBehindACompactedLogCatchesUpBySnapshot(t *testing.T) {
	tune := func(c *Config) { c.TrailingLogs = 2 }
	ms := clusterWith(t, tune)
	behind := ms[2]
	dir, id := behind.dir, behind.node.ID()
	behind.stop(t)
	leader := leaderOf(t, ms[:2])
	var cmds []string
	for i := range 20 {
		cmds = append(cmds, fmt.Sprintf("while down %d", i))
		apply(t, leader, cmds[i])
	}
	if err := leader.raft.R.Snapshot().Error(); err != nil {
		t.Fatalf("leader snapshot: %v", err)
	}
	m := startWith(t, dir, secret(1), false, leader.addrs(), zaptest.NewLogger(t), tune)
	if m.node.ID() != id {
		t.Fatalf("restarted with identity %s, want %s", m.node.ID(), id)
	}
	eventually(t, 20*time.Second, "the member behind catches up", func() bool { return m.fsm.has(cmds...) })
	// raft restores the FSM from an installed snapshot before it records the
	// snapshot as its last one, so the record can trail the commands by a
	// moment. A member that caught up from log entries never records one.
	eventually(t, 5*time.Second, "the member records the snapshot it caught up from (it must not catch up from log entries: the test would not test it)", func() bool {
		return m.raft.R.Stats()["last_snapshot_index"] != "0"
	})
}

// A kept stream the member ended (it restarted, or closed its side) costs
// raft no failed request: the request goes again on a new stream.
func TestStreamTransportRetriesAnEndedIdleStream(t *testing.T) {
	a, b := transportPair(t)
	answer(t, a, func(rpc raft.RPC) {
		rpc.Respond(&raft.RequestVoteResponse{Term: rpc.Command.(*raft.RequestVoteRequest).Term}, nil)
	})
	var resp raft.RequestVoteResponse
	if err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 1}, &resp); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	for s := range a.serving { // the server's end of the kept stream
		s.Reset()
	}
	a.mu.Unlock()
	if err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 2}, &resp); err != nil || resp.Term != 2 {
		t.Fatalf("a request after the member ended the kept stream: %+v, %v", resp, err)
	}
}

// Codecs are borrowed per request: many requests at once, on as many
// streams, each get their own answer.
func TestStreamTransportConcurrentRequestsGetTheirOwnAnswers(t *testing.T) {
	a, b := transportPair(t)
	answer(t, a, func(rpc raft.RPC) {
		go rpc.Respond(&raft.RequestVoteResponse{Term: rpc.Command.(*raft.RequestVoteRequest).Term}, nil)
	})
	const workers, each = 16, 25
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				term := uint64(w*1000 + i + 1)
				var resp raft.RequestVoteResponse
				if err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: term}, &resp); err != nil {
					errs <- err
					return
				}
				if resp.Term != term {
					errs <- fmt.Errorf("request of term %d got the answer of term %d", term, resp.Term)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(b.idle[a.h.ID()]); n > maxIdle {
		t.Errorf("%d idle streams kept, want at most %d", n, maxIdle)
	}
}

// A member that sends more than its answer broke the protocol: the request
// fails and its stream is not used again, rather than the extra bytes being
// read as the start of the next answer (or dropped with a buffer).
func TestStreamTransportRefusesBytesAfterAnAnswer(t *testing.T) {
	a, b := transportPair(t)
	a.h.SetStreamHandler(rpcProtocol, func(s network.Stream) {
		defer s.Close()
		c := borrowCodec(s)
		var kind [1]byte
		var req raft.RequestVoteRequest
		if _, err := io.ReadFull(c.r, kind[:]); err != nil || c.dec.Decode(&req) != nil {
			s.Reset()
			return
		}
		_ = c.enc.Encode("")
		_ = c.enc.Encode(&raft.RequestVoteResponse{Term: req.Term, Granted: true})
		_ = c.w.WriteByte(0x93) // a stray byte after the answer
		_ = c.w.Flush()
		_, _ = io.Copy(io.Discard, s)
	})
	var resp raft.RequestVoteResponse
	err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 3}, &resp)
	if err == nil || !strings.Contains(err.Error(), "unexpected bytes") {
		t.Fatalf("an answer followed by a stray byte gave %v, want a protocol error", err)
	}
	if n := len(b.idle[a.h.ID()]); n != 0 {
		t.Errorf("%d idle streams kept after a protocol error, want none", n)
	}
}

// Streams unused for idleStreamTTL are closed, which ends the goroutine
// serving each on the other side; a stream used since is kept, and the next
// request opens a new one.
func TestStreamTransportClosesStreamsLeftIdle(t *testing.T) {
	a, b := transportPair(t)
	answer(t, a, func(rpc raft.RPC) {
		rpc.Respond(&raft.RequestVoteResponse{Term: rpc.Command.(*raft.RequestVoteRequest).Term}, nil)
	})
	vote := func() {
		t.Helper()
		var resp raft.RequestVoteResponse
		if err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 7}, &resp); err != nil || resp.Term != 7 {
			t.Fatalf("vote: %v (term %d)", err, resp.Term)
		}
	}
	serving := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.serving)
	}
	vote()
	if got := b.takeExpired(time.Now().Add(-time.Minute)); len(got) != 0 {
		t.Fatalf("%d streams used just now taken as expired", len(got))
	}
	if serving() != 1 {
		t.Fatalf("%d streams served, want the one kept for reuse", serving())
	}
	expired := b.takeExpired(time.Now().Add(time.Second))
	if len(expired) != 1 {
		t.Fatalf("%d streams expired, want 1", len(expired))
	}
	b.mu.Lock()
	if _, ok := b.idle[a.h.ID()]; ok {
		t.Error("the member's entry stays with no stream kept")
	}
	b.mu.Unlock()
	for _, s := range expired {
		s.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for serving() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the other side still serves the closed stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	vote()
}

// A served stream that waits for its next request longer than serveIdle is
// dropped, and the side that kept it retries on a new stream.
func TestStreamTransportDropsStreamsTheOtherSideKeepsTooLong(t *testing.T) {
	a, b := transportPair(t)
	a.mu.Lock()
	a.serveIdle = 100 * time.Millisecond
	a.mu.Unlock()
	answer(t, a, func(rpc raft.RPC) {
		rpc.Respond(&raft.RequestVoteResponse{Term: rpc.Command.(*raft.RequestVoteRequest).Term}, nil)
	})
	for i := range 2 {
		var resp raft.RequestVoteResponse
		if err := b.RequestVote("", a.LocalAddr(), &raft.RequestVoteRequest{Term: 3}, &resp); err != nil {
			t.Fatalf("vote %d: %v", i, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			a.mu.Lock()
			n := len(a.serving)
			a.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a stream idle past serveIdle is still served")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
