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

// While the node's addresses are on record, periodic advertisements are
// skipped and one asked for still goes; once they are not, advertisements
// resume at the interval reached, not at the base one.
func TestAdvertScheduleSkipsPeriodicAdvertsWhileOnRecord(t *testing.T) {
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	base := time.Second
	onRecord := true
	recorded := func() bool { return onRecord }
	s := newAdvertSchedule(start, base)
	var published []time.Duration
	run := func(from, to time.Duration) {
		for now := start.Add(from); now.Sub(start) <= to; now = now.Add(10 * time.Millisecond) {
			if now.Before(s.next) {
				continue
			}
			if s.skipPeriodic(recorded) {
				s.schedule(now)
				continue
			}
			published = append(published, now.Sub(start))
			s.published(now)
		}
	}
	run(0, 20*time.Second)
	if len(published) != 0 {
		t.Fatalf("on record: advertised at %v, want no periodic advertisement", published)
	}
	s.connected(start.Add(20 * time.Second))
	run(20*time.Second, 21*time.Second)
	if !slices.Equal(published, []time.Duration{20200 * time.Millisecond}) {
		t.Fatalf("on record, a new connection at 20s: advertised at %v, want at 20.2s", published)
	}
	if s.skipPeriodic(nil) || s.skipPeriodic(func() bool { return false }) {
		t.Fatal("a periodic advertisement was skipped with the addresses not on record")
	}
	// Skipped at 1, 3, 7, 15 s; after the asked one at 20.2 s the interval
	// starts over from base, and 21.2 and 23.2 s are skipped too. Off the
	// record from 24 s: the next, due 23.2 + 4 s, goes.
	run(20*time.Second+210*time.Millisecond, 24*time.Second)
	onRecord = false
	run(24*time.Second+10*time.Millisecond, 30*time.Second)
	if want := []time.Duration{20200 * time.Millisecond, 27200 * time.Millisecond}; !slices.Equal(published, want) {
		t.Fatalf("off the record from 24s: advertised at %v, want %v", published, want)
	}
}
