package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A daemon without a leader advertises again every `after`, and not at all
// while it has one.
func TestAdvertisesAgainWhileNoLeaderIsHeard(t *testing.T) {
	var leader atomic.Bool
	var adverts atomic.Int32
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		advertiseWhileLeaderless(ctx, leader.Load, func() { adverts.Add(1) }, 100*time.Millisecond, 5*time.Millisecond, zap.New(core))
	}()
	defer func() { cancel(); <-done }()

	leader.Store(true)
	time.Sleep(300 * time.Millisecond)
	if n := adverts.Load(); n != 0 {
		t.Fatalf("%d advertisements with a leader, want none", n)
	}
	leader.Store(false)
	time.Sleep(50 * time.Millisecond)
	if n := adverts.Load(); n != 0 {
		t.Fatalf("advertised %d times within 50 ms of losing the leader, want none yet", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for adverts.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := adverts.Load(); n < 2 {
		t.Fatalf("%d advertisements in 5 s without a leader, want one every 100 ms", n)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d info lines for one absence of the leader, want 1", n)
	}
	leader.Store(true)
	time.Sleep(50 * time.Millisecond)
	n := adverts.Load()
	time.Sleep(300 * time.Millisecond)
	if m := adverts.Load(); m != n {
		t.Fatalf("advertised %d more times after a leader was heard again", m-n)
	}
}
