package systemdtest

import (
	"context"
	"fmt"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
)

// pollEvery is how often the downtime watcher asks a peer; it bounds the
// error of each figure.
const pollEvery = 20 * time.Millisecond

// measureDowntime prints one peer's downtime for an upgrade through
// upgraded's systemd runner (a rolling plan, one peer at a time, so each of
// the three peers is one sample) next to the same done by hand on each peer
// (swap the binary the unit runs, `systemctl restart ipfs-cluster`), in the
// same run. Both are timed the same way: from systemd's record of the old
// peer leaving the active state (ActiveExitTimestamp of the peer's unit) to
// the first answer of the peer with the new version and the full pinset,
// seen by the same poller. Nothing is asserted on the figures.
func measureDowntime(t *testing.T, ctx context.Context, s *site) {
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	all := make([]int, len(s.hosts))
	for i := range all {
		all[i] = i
	}
	begin := time.Now()
	wait := s.watchVersion(wctx, next, all...)
	if out, err := s.announce(ctx, relNext, "--procedure", "rolling"); err != nil {
		s.dumpJournals(t, ctx)
		t.Fatalf("rolling upgrade to %s: %v\n%s", next, err, out)
	}
	seen, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	viaRunner := make([]time.Duration, len(s.hosts))
	for i, h := range s.hosts {
		stopped, err := stoppedAt(ctx, h, begin)
		if err != nil {
			t.Fatal(err)
		}
		viaRunner[i] = seen[i].Sub(stopped)
	}

	// By hand: the new binaries in a folder of the operator's, the link the
	// unit runs pointed at them, the unit restarted.
	manual := "/opt/manual/" + byHand
	byHandD := make([]time.Duration, len(s.hosts))
	orig := make([]string, len(s.hosts))
	for i, h := range s.hosts {
		out, err := h.Sh(ctx, "readlink /var/lib/upgraded/bin/current && mkdir -p "+manual)
		if err != nil {
			t.Fatal(err)
		}
		orig[i] = strings.TrimSpace(out)
		for _, bin := range []string{s.byHand.Service, s.byHand.Ctl} {
			if err := h.Copy(ctx, bin, manual+"/"+path.Base(bin)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.Sh(ctx, "chmod 755 "+manual+"/*"); err != nil {
			t.Fatal(err)
		}
	}
	for i, h := range s.hosts {
		begin := time.Now()
		wait := s.watchVersion(wctx, byHand, i)
		if err := swapByHand(ctx, h, manual); err != nil {
			t.Fatal(err)
		}
		seen, err := wait()
		if err != nil {
			s.dumpJournals(t, ctx)
			t.Fatal(err)
		}
		stopped, err := stoppedAt(ctx, h, begin)
		if err != nil {
			t.Fatal(err)
		}
		byHandD[i] = seen[0].Sub(stopped)
	}
	t.Logf("FIGURE downtime of one peer's upgrade (stop to verified: version and %d pins, polled every %s), 3 peers each: "+
		"upgraded's systemd runner %s, by hand (swap + systemctl restart) %s",
		pins, pollEvery, roundAll(viaRunner), roundAll(byHandD))

	// Put back what upgraded installed, so that its own records hold again.
	for i, h := range s.hosts {
		if err := swapByHand(ctx, h, orig[i]); err != nil {
			t.Fatal(err)
		}
	}
	s.requirePeers(t, ctx, next)
}

// swapByHand points the link the peer's unit runs at dir, as upgraded's
// user so that upgraded can replace it later, and restarts the unit as root.
func swapByHand(ctx context.Context, h Host, dir string) error {
	script := fmt.Sprintf("runuser -u upgraded -- sh -c 'cd /var/lib/upgraded/bin && ln -sfn %s current.manual && mv -T current.manual current'"+
		" && systemctl restart ipfs-cluster.service", dir)
	if _, err := h.Sh(ctx, script); err != nil {
		return fmt.Errorf("swapping the peer's binary by hand on %s: %w", h.Name, err)
	}
	return nil
}

// watchVersion polls the given peers until each answers version with the
// full pinset; the returned function waits for all and gives, per peer in
// the order given, when that was first seen.
func (s *site) watchVersion(ctx context.Context, version string, peers ...int) func() ([]time.Time, error) {
	type result struct {
		at  time.Time
		err error
	}
	results := make([]chan result, len(peers))
	for k, i := range peers {
		results[k] = make(chan result, 1)
		go func(ch chan<- result, api string) {
			tick := time.NewTicker(pollEvery)
			defer tick.Stop()
			for {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				_, body, err := simtest.Get(rctx, api, "/version")
				if err == nil && strings.Contains(string(body), `"`+version+`"`) && simtest.PinCount(rctx, api) == pins {
					cancel()
					ch <- result{at: time.Now()}
					return
				}
				cancel()
				select {
				case <-ctx.Done():
					ch <- result{err: fmt.Errorf("waiting for peer at %s on %s with %d pins: %w", api, version, pins, ctx.Err())}
					return
				case <-tick.C:
				}
			}
		}(results[k], s.peers[i].APIURL)
	}
	return func() ([]time.Time, error) {
		out := make([]time.Time, len(peers))
		var first error
		for k, ch := range results {
			r := <-ch
			out[k] = r.at
			if r.err != nil && first == nil {
				first = r.err
			}
		}
		return out, first
	}
}

// stoppedAt reads when systemd last saw the peer's unit leave the active
// state, to the microsecond: the start of a stop or of a restart. It must be
// after since, when the measured operation began.
func stoppedAt(ctx context.Context, h Host, since time.Time) (time.Time, error) {
	out, err := h.Sh(ctx, "systemctl show --timestamp=us+utc -p ActiveExitTimestamp --value ipfs-cluster.service")
	if err != nil {
		return time.Time{}, err
	}
	at, err := time.Parse("Mon 2006-01-02 15:04:05.000000 MST", strings.TrimSpace(out))
	if err != nil {
		return time.Time{}, fmt.Errorf("reading when ipfs-cluster.service stopped on %s: %w", h.Name, err)
	}
	if at.Before(since) {
		return time.Time{}, fmt.Errorf("ipfs-cluster.service on %s last stopped at %s, before the operation measured began (%s)",
			h.Name, at.Format(time.StampMicro), since.UTC().Format(time.StampMicro))
	}
	return at, nil
}

func roundAll(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}
