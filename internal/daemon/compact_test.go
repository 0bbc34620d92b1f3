package daemon

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The log is compacted on every check while no plan runs, never while one
// does, and a failure is said in words.
func TestCompactOnlyWhileIdle(t *testing.T) {
	var busy atomic.Bool
	var calls atomic.Int64
	var fail atomic.Bool
	core, logs := observer.New(zap.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		compactWhileIdle(ctx, busy.Load, func() (bool, error) {
			calls.Add(1)
			if fail.Load() {
				return false, errors.New("disk full")
			}
			return true, nil
		}, 5*time.Millisecond, zap.New(core))
	}()
	defer func() { cancel(); <-done }()
	waitCalls := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); calls.Load() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d compactions in 5 s while idle, want %d", calls.Load(), n)
			}
		}
	}
	waitCalls(3)

	busy.Store(true)
	time.Sleep(20 * time.Millisecond) // a check under way finishes
	n := calls.Load()
	time.Sleep(100 * time.Millisecond)
	if m := calls.Load(); m != n {
		t.Fatalf("%d compactions while a plan ran, want none", m-n)
	}

	fail.Store(true)
	busy.Store(false)
	waitCalls(n + 2)
	if logs.FilterMessage("compacting the raft log").Len() == 0 {
		t.Fatal("a failed compaction was not logged")
	}
}
