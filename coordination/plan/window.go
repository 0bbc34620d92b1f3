package plan

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a span of days and hours (UTC) in which a plan may start, written
// like "Mon-Fri 02:00-05:00", "Sat,Sun 00:00-23:59" or "* 22:00-02:00"
// (an end before the start runs past midnight).
type Window struct {
	Days       [7]bool // by time.Weekday
	Start, End int     // minutes after midnight
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// ParseWindow reads a window.
func ParseWindow(s string) (Window, error) {
	var w Window
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return w, fmt.Errorf("window %q: want DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 02:00-05:00\"", s)
	}
	if err := w.parseDays(fields[0]); err != nil {
		return w, fmt.Errorf("window %q: %w", s, err)
	}
	from, to, ok := strings.Cut(fields[1], "-")
	if !ok {
		return w, fmt.Errorf("window %q: hours must be HH:MM-HH:MM", s)
	}
	var err error
	if w.Start, err = clock(from); err == nil {
		w.End, err = clock(to)
	}
	if err != nil {
		return w, fmt.Errorf("window %q: %w", s, err)
	}
	return w, nil
}

func (w *Window) parseDays(s string) error {
	if s == "*" {
		for i := range w.Days {
			w.Days[i] = true
		}
		return nil
	}
	for _, part := range strings.Split(strings.ToLower(s), ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, ok1 := weekdays[a]
		to := from
		ok2 := true
		if isRange {
			to, ok2 = weekdays[b]
		}
		if !ok1 || !ok2 {
			return fmt.Errorf("unknown day in %q (use Mon..Sun, ranges like Mon-Fri, lists, or *)", part)
		}
		for d := from; ; d = (d + 1) % 7 {
			w.Days[d] = true
			if d == to {
				break
			}
		}
	}
	return nil
}

func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("bad time %q (want HH:MM)", s)
	}
	return hh*60 + mm, nil
}

// Contains reports whether t (taken in UTC) falls in the window.
func (w Window) Contains(t time.Time) bool {
	t = t.UTC()
	min := t.Hour()*60 + t.Minute()
	if w.Start <= w.End {
		return w.Days[t.Weekday()] && min >= w.Start && min < w.End
	}
	// Past midnight: the evening part belongs to the start day, the morning
	// part to the day before.
	if min >= w.Start {
		return w.Days[t.Weekday()]
	}
	return min < w.End && w.Days[(t.Weekday()+6)%7]
}

// NextStart is the first moment at or after from that lies in one of the
// windows (from itself when there are none); ok is false when no window
// opens within eight days.
func NextStart(windows []string, from time.Time) (time.Time, bool) {
	if len(windows) == 0 {
		return from, true
	}
	var ws []Window
	for _, s := range windows {
		if w, err := ParseWindow(s); err == nil {
			ws = append(ws, w)
		}
	}
	in := func(t time.Time) bool {
		for _, w := range ws {
			if w.Contains(t) {
				return true
			}
		}
		return false
	}
	if in(from) {
		return from, true
	}
	t := from.UTC().Truncate(time.Minute).Add(time.Minute)
	for end := from.Add(8 * 24 * time.Hour); t.Before(end); t = t.Add(time.Minute) {
		if in(t) {
			return t, true
		}
	}
	return time.Time{}, false
}
