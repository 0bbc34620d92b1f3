package artifacts

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestOrderIsTheSameEverywhereAndSpreadsArtifacts(t *testing.T) {
	hosts := []string{"host-a", "host-b", "host-c", "host-d", "host-e"}
	first := map[string]int{}
	for i := range 200 {
		sha := fmt.Sprintf("%064x", i)
		o := Order(sha, hosts)
		reversed := append([]string(nil), hosts...)
		sort.Sort(sort.Reverse(sort.StringSlice(reversed)))
		if again := Order(sha, reversed); !reflect.DeepEqual(o, again) {
			t.Fatalf("the order depends on how the hosts were listed: %v vs %v", o, again)
		}
		sorted := append([]string(nil), o...)
		sort.Strings(sorted)
		if !reflect.DeepEqual(sorted, hosts) {
			t.Fatalf("the order %v is not a permutation of %v", o, hosts)
		}
		first[o[0]]++
	}
	for _, h := range hosts {
		if first[h] == 0 {
			t.Fatalf("host %s is never the seeder over 200 artifacts: %v", h, first)
		}
	}
	if got := Order("x", []string{"b", "a", "b"}); len(got) != 2 {
		t.Fatalf("a host listed twice is ranked twice: %v", got)
	}
}

func TestWaitingTakeOver(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const T = 10 * time.Second
	order := []string{"h0", "h1", "h2", "h3"}
	type event struct {
		id string
		o  outcome
		at time.Duration
	}
	tests := []struct {
		name   string
		self   string
		events []event
		at     time.Duration
		want   bool
		reason string
	}{
		{name: "the seeder fetches at once", self: "h0", want: true, reason: "seeder"},
		{name: "the second waits for a quiet seeder's turn", self: "h1", events: []event{{id: "h0", o: outcomeWait}}, at: T - time.Second},
		{name: "the second takes over once the seeder's turn is over", self: "h1", at: T, want: true, reason: "silent past its turn"},
		{name: "the second takes over from a seeder that refused at once", self: "h1", events: []event{{id: "h0", o: outcomeGone}}, want: true, reason: "refused"},
		{name: "the second waits for an unreachable seeder's turn", self: "h1", events: []event{{id: "h0", o: outcomeUnreachable}}, at: T - time.Second},
		{name: "the second takes over once an unreachable seeder's turn is over", self: "h1", events: []event{{id: "h0", o: outcomeUnreachable}}, at: T, want: true, reason: "unreachable past its turn"},
		{name: "a seeder unreachable then heard fetching is given more time", self: "h1", events: []event{{id: "h0", o: outcomeUnreachable}, {id: "h0", o: outcomeFetching, at: T - time.Second}}, at: 2*T - 2*time.Second},
		{name: "the second takes over from a seeder whose source failed", self: "h1", events: []event{{id: "h0", o: outcomeFailed}}, want: true, reason: "failed to fetch"},
		{name: "the second takes over from a forger", self: "h1", events: []event{{id: "h0", o: outcomeBad}}, want: true, reason: "wrong copy"},
		{name: "a seeder heard fetching is given more time", self: "h1", events: []event{{id: "h0", o: outcomeFetching, at: T - time.Second}}, at: 2*T - 2*time.Second},
		{name: "a seeder busy serving its copy is given more time", self: "h1", events: []event{{id: "h0", o: outcomeBusy, at: T - time.Second}}, at: 2*T - 2*time.Second},
		{name: "a seeder silent after fetching is given up", self: "h1", events: []event{{id: "h0", o: outcomeFetching, at: T - time.Second}}, at: 2*T - time.Second, want: true},
		{name: "the third waits for the second's turn when the seeder is down", self: "h2", events: []event{{id: "h0", o: outcomeGone}}, at: 2*T - time.Second},
		{name: "the third takes over when both before it are given up", self: "h2", events: []event{{id: "h0", o: outcomeGone}}, at: 2 * T, want: true},
		{name: "a forger is not forgiven by a later answer", self: "h1", events: []event{{id: "h0", o: outcomeBad}, {id: "h0", o: outcomeFetching}}, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWaiting(order, tc.self, t0, T)
			for _, e := range tc.events {
				w.note(e.id, e.o, t0.Add(e.at))
			}
			why, got := w.takeOver(t0.Add(tc.at))
			if got != tc.want || !strings.Contains(why, tc.reason) {
				t.Fatalf("takeOver = %v %q, want %v (%q)", got, why, tc.want, tc.reason)
			}
		})
	}
	w := newWaiting(order, "h2", t0, T)
	w.note("h0", outcomeBad, t0)
	w.note("h3", outcomeGone, t0)
	if got := w.candidates(); !reflect.DeepEqual(got, []string{"h1"}) {
		t.Fatalf("candidates = %v, want only h1 (h0 forged, h3 refused, h2 is self)", got)
	}
	w.note("h1", outcomeUnreachable, t0)
	if got := w.candidates(); !reflect.DeepEqual(got, []string{"h1"}) {
		t.Fatalf("candidates = %v, want h1 still: an unreachable peer is asked again", got)
	}
	if w := newWaiting(order, "elsewhere", t0, T); w.rank != -1 {
		t.Fatalf("a host outside the plan has rank %d", w.rank)
	}
}

func TestEachRoundAsksABoundedRotatingSet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var order []string
	for i := range 10 {
		order = append(order, fmt.Sprintf("h%d", i))
	}
	w := newWaiting(order, "h5", t0, 10*time.Second)
	asked := map[string]bool{}
	for round := range 4 {
		ids := w.toAsk(round, 3, t0)
		if len(ids) > 4 || ids[len(ids)-1] != "h0" {
			t.Fatalf("round %d asks %v: want at most 3 peers then h0, the host expected to fetch", round, ids)
		}
		for _, id := range ids {
			if id == "h5" {
				t.Fatalf("round %d asks itself: %v", round, ids)
			}
			asked[id] = true
		}
	}
	if len(asked) != 9 {
		t.Fatalf("four rounds of 3 asked only %v of the 9 peers", asked)
	}
	w.note("h0", outcomeGone, t0)
	if ids := w.toAsk(0, 3, t0); ids[len(ids)-1] != "h1" {
		t.Fatalf("with h0 refusing the round ends with %v, want h1 next in the order", ids)
	}
}
