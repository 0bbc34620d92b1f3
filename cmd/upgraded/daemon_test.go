package main

import (
	"runtime/debug"
	"testing"
)

func TestLeanGCUnlessTheOperatorChose(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	leanGC()
	if got := debug.SetGCPercent(100); got != daemonGOGC {
		t.Fatalf("GOGC unset: collection target %d, want %d", got, daemonGOGC)
	}

	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200) // what the runtime read from GOGC at start
	leanGC()
	if got := debug.SetGCPercent(100); got != 200 {
		t.Fatalf("GOGC=200 set by the operator: collection target %d, want it kept", got)
	}
}
