package p2p

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// Close ends the context of a handler under way, waits for it, and no
// handler runs for a stream opened afterwards.
func TestServiceCloseWaitsAndRefusesLateStreams(t *testing.T) {
	srv := startNode(t, nodeOpts{})
	cli := startNode(t, nodeOpts{bootstrap: addrStrings(srv)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const proto = "/upgraded/test-service/1.0.0"
	started, ended := make(chan struct{}), make(chan struct{})
	calls := 0
	svc := ServeProtocol(srv.Host, proto, func(hctx context.Context, st network.Stream) {
		calls++
		close(started)
		<-hctx.Done() // held until Close
		close(ended)
		_ = st.Reset()
	})
	st, err := cli.Host.NewStream(ctx, srv.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the handler never ran")
	}
	svc.Close()
	select {
	case <-ended:
	default:
		t.Fatal("Close returned before the handler under way ended")
	}
	svc.Close() // safe twice
	if late, err := cli.Host.NewStream(ctx, srv.ID(), proto); err == nil {
		_, _ = late.Write([]byte("x"))
		_ = late.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(late); err == nil {
			t.Fatal("a stream opened after Close was answered")
		}
	}
	if calls != 1 {
		t.Fatalf("handler ran %d times, want once", calls)
	}
}
