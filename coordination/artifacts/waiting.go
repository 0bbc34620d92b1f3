package artifacts

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// outcome is what one request to one peer told about it.
type outcome int

const (
	outcomeWait     outcome = iota // not held yet, or no answer: ask again next round
	outcomeBusy                    // held, but serving as many copies as it allows: alive, ask again next round
	outcomeGot                     // a verified copy is staged
	outcomeFetching                // it is fetching from the source now: alive, give it time
	outcomeFailed                  // its own fetch from the source failed
	outcomeBad                     // it sent a wrong, short or oversize copy: never asked again for this artifact
	outcomeGone                    // it refused the request: not asked again for this artifact
	// outcomeUnreachable: no stream could be opened to it. Asked again, and
	// waited for until its turn is over, as a silent one: at 100 hosts on a
	// loaded machine dials fail for a while (and libp2p then backs off) with
	// every daemon up, and giving up a seeder at its first failed dial sent
	// 13 hosts to the source instead of one.
	outcomeUnreachable
)

// errNoAnswer marks a peer that took the request but did not answer in time.
var errNoAnswer = errors.New("no answer")

func classify(err error) outcome {
	switch {
	case err == nil:
		return outcomeGot
	case errors.Is(err, ErrBusy):
		return outcomeBusy
	case errors.Is(err, ErrNotHeld), errors.Is(err, errNoAnswer):
		return outcomeWait
	case errors.Is(err, ErrFetching):
		return outcomeFetching
	case errors.Is(err, ErrSourceFailed):
		return outcomeFailed
	case errors.Is(err, ErrUnreachable):
		return outcomeUnreachable
	case errors.Is(err, ErrRefused):
		return outcomeGone
	}
	return outcomeBad
}

// waiting is one host's view, during one fetch, of the hosts before it in
// the artifact's Order: which of them may still fetch from the source, and
// until when it waits for each. It is pure bookkeeping; time is passed in.
type waiting struct {
	order    []string
	self     string
	rank     int // self's place in order; -1 when not in it
	start    time.Time
	timeout  time.Duration
	deadline map[string]time.Time // hosts before self: when their turn is over
	last     map[string]outcome   // the last thing each peer told
}

func newWaiting(order []string, self string, now time.Time, timeout time.Duration) *waiting {
	w := &waiting{order: order, self: self, rank: -1, start: now, timeout: timeout,
		deadline: map[string]time.Time{}, last: map[string]outcome{}}
	for i, id := range order {
		if id == self {
			w.rank = i
			break
		}
		// Host i takes over at about i*timeout if all before it are silent:
		// it has until (i+1)*timeout to be heard fetching.
		w.deadline[id] = now.Add(time.Duration(i+1) * timeout)
	}
	return w
}

// toAsk are the peers asked in one round: a window of spread peers that
// rotates over the candidates from round to round (starting at a different
// place on each host, so that the requests spread over the holders), then
// the first host before this one in the order that is still waited for (it
// is the one expected to fetch from the source now).
func (w *waiting) toAsk(round, spread int, now time.Time) []string {
	cands := w.candidates()
	var out []string
	var expected string
	if w.rank > 0 {
		for _, id := range w.order[:w.rank] {
			if w.givenUp(id, now) == "" {
				expected = id
				break
			}
		}
	}
	if len(cands) > 0 {
		off := (max(w.rank, 0) + round) * spread
		for i := 0; i < spread && i < len(cands); i++ {
			if id := cands[(off+i)%len(cands)]; id != expected {
				out = append(out, id)
			}
		}
	}
	if expected != "" {
		out = append(out, expected)
	}
	return out
}

// candidates are the peers worth asking, in order.
func (w *waiting) candidates() []string {
	out := make([]string, 0, len(w.order))
	for _, id := range w.order {
		if o := w.last[id]; id != w.self && o != outcomeBad && o != outcomeGone {
			out = append(out, id)
		}
	}
	return out
}

// note records what a peer told at now; a peer heard fetching from the
// source, or holding a copy while busy serving it, gets another timeout
// from now. (Busy seeders were given up as "silent past their turn" at 100
// hosts on a loaded machine, their copy in hand, and the next host fetched
// from the source again.)
func (w *waiting) note(id string, o outcome, now time.Time) {
	if w.last[id] == outcomeBad || w.last[id] == outcomeGone {
		return // never taken back within this fetch
	}
	w.last[id] = o
	alive := o == outcomeFetching || o == outcomeBusy
	if d, ok := w.deadline[id]; ok && alive && d.Before(now.Add(w.timeout)) {
		w.deadline[id] = now.Add(w.timeout)
	}
}

// takeOver says whether this host must fetch from the source now, and why:
// it is first in the order, or every host before it was given up.
func (w *waiting) takeOver(now time.Time) (string, bool) {
	if w.rank == 0 {
		return "this host is the artifact's seeder (first in its order)", true
	}
	reasons := make([]string, 0, w.rank)
	for _, id := range w.order[:w.rank] {
		why := w.givenUp(id, now)
		if why == "" {
			return "", false
		}
		reasons = append(reasons, short(id)+" "+why)
	}
	return fmt.Sprintf("took over from the %d host(s) before this one in the artifact's order: %s",
		w.rank, strings.Join(reasons, "; ")), true
}

// givenUp says why the host is no longer waited for, or "" while it is.
func (w *waiting) givenUp(id string, now time.Time) string {
	switch w.last[id] {
	case outcomeGone:
		return "refused the request"
	case outcomeBad:
		return "sent a wrong copy"
	case outcomeFailed:
		return "failed to fetch from the source"
	}
	if !now.Before(w.deadline[id]) {
		if w.last[id] == outcomeUnreachable {
			return "unreachable past its turn"
		}
		return "silent past its turn"
	}
	return ""
}

// short abbreviates a peer ID for log lines.
func short(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-8:]
	}
	return id
}
