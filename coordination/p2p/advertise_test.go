package p2p

import (
	"slices"
	"testing"
	"time"
)

// fire runs the schedule like advertise does, for the span of d from start,
// with new connections at the given offsets, and returns the offsets at
// which it advertised.
func fire(start time.Time, base, d time.Duration, conns ...time.Duration) []time.Duration {
	s := newAdvertSchedule(start, base)
	var out []time.Duration
	for now := start; now.Sub(start) <= d; now = now.Add(10 * time.Millisecond) {
		for _, c := range conns {
			if now.Sub(start) == c {
				s.connected(now)
			}
		}
		if !now.Before(s.next) {
			out = append(out, now.Sub(start))
			s.published(now)
		}
	}
	return out
}

func TestAdvertScheduleRateLimitsConnectionsAndBacksOff(t *testing.T) {
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	base := time.Second

	// A first connection is told at once (after the settle delay).
	if got := fire(start, base, 2*time.Second, 300*time.Millisecond); len(got) == 0 || got[0] != 500*time.Millisecond {
		t.Fatalf("first connection at 300ms: advertised at %v, want first at 500ms", got)
	}

	// Twenty connections within a second make one advertisement now and one
	// a base interval later, not twenty.
	var burst []time.Duration
	for i := range 20 {
		burst = append(burst, time.Duration(i)*50*time.Millisecond)
	}
	got := fire(start, base, 1900*time.Millisecond, burst...)
	if len(got) != 2 || got[0] != 200*time.Millisecond || got[1] != 1200*time.Millisecond {
		t.Fatalf("20 connections in 1s: advertised at %v, want at 200ms and 1.2s", got)
	}

	// Without connections the interval doubles up to 16 base intervals.
	got = fire(start, base, 100*time.Second)
	want := []time.Duration{1, 2, 4, 8, 16, 32, 48, 64, 80, 96}
	if len(got) != len(want) {
		t.Fatalf("idle: advertised at %v, want at %v seconds", got, want)
	}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("idle: advertised at %v, want at %v seconds", got, want)
		}
	}

	// A connection after a long quiet spell is told soon, and the interval
	// starts over from base.
	got = fire(start, base, 40*time.Second, 35*time.Second)
	if len(got) != 9 || got[5] != 32*time.Second || got[6] != 35200*time.Millisecond || got[7] != 36200*time.Millisecond || got[8] != 38200*time.Millisecond {
		t.Fatalf("connection at 35s after a quiet spell: advertised at %v, want 32s, then 35.2s, 36.2s, 38.2s", got)
	}
}

// Daemons started together do not keep advertising together: each periodic
// interval varies by up to a fifth, so by the fourth advertisement of 50
// daemons the moments are spread over seconds instead of one instant.
func TestAdvertScheduleSpreadsDaemonsStartedTogether(t *testing.T) {
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	base := 10 * time.Second
	var fourth []time.Time
	for range 50 {
		s := newAdvertSchedule(start, base)
		s.jitter = spreadGap
		now := s.next
		for range 3 {
			s.published(now)
			now = s.next
		}
		fourth = append(fourth, now)
	}
	for _, at := range fourth {
		if d := at.Sub(start); d < 66*time.Second || d > 94*time.Second { // 10+10+20+40 s, each gap but the first within a fifth
			t.Fatalf("fourth advertisement %v after start, want 66-94s", d)
		}
	}
	lo, hi := slices.MinFunc(fourth, time.Time.Compare), slices.MaxFunc(fourth, time.Time.Compare)
	if hi.Sub(lo) < 5*time.Second {
		t.Fatalf("50 daemons' fourth advertisements span %v, want seconds apart", hi.Sub(lo))
	}
}

// While the daemon is quiet (its plan switching), a periodic advertisement
// waits, at most maxQuietHold past its time; one asked for by a new
// connection or AdvertiseSoon does not.
func TestAdvertScheduleHoldsPeriodicAdvertsWhileQuiet(t *testing.T) {
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	quiet := func() bool { return true }
	s := newAdvertSchedule(start, 10*time.Second)
	due := s.next
	if !s.holdPeriodic(due, quiet) {
		t.Fatal("a periodic advertisement was not held while quiet")
	}
	if s.holdPeriodic(due, func() bool { return false }) || s.holdPeriodic(due, nil) {
		t.Fatal("a periodic advertisement was held while not quiet")
	}
	if s.holdPeriodic(due.Add(maxQuietHold), quiet) {
		t.Fatalf("a periodic advertisement was held %v past its time", maxQuietHold)
	}
	s.published(due.Add(time.Second))
	s.connected(s.next.Add(-5 * time.Second))
	if s.holdPeriodic(s.next, quiet) {
		t.Fatal("an advertisement asked for by a new connection was held")
	}
	s.published(s.next)
	if !s.holdPeriodic(s.next, quiet) {
		t.Fatal("after the asked-for advertisement, the next periodic one was not held")
	}
}
