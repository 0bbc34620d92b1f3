package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/harness"
)

// SoakResult is what a soak run proved.
type SoakResult struct {
	Upgrades    int // plans announced
	Succeeded   int // plans that ended done
	PinsAcked   int // pins the cluster acknowledged while upgrading
	PinsChecked int // acknowledged pins found on every peer at the end
	Missing     []string
	Took        time.Duration
}

// Soak upgrades a 3-peer cluster back and forth between env.From and env.To
// (with --allow-downgrade) n times while a client keeps adding pins, then
// checks that every pin the cluster acknowledged is on every peer. logf
// reports each plan.
func Soak(ctx context.Context, env Env, n int, logf func(format string, args ...any)) (*SoakResult, error) {
	env.defaults()
	start := time.Now()
	res := &SoakResult{}
	c, err := harness.Setup(ctx, harness.Options{Root: env.Root, Peers: 3, From: simtest.BuildSpec{Version: env.From},
		UpgradedBin: env.UpgradedBin, BuildDir: env.BuildDir, Tune: tune})
	if err != nil {
		return res, fmt.Errorf("setting up the soak cluster: %w", err)
	}
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		return res, err
	}
	releases := map[string][]string{}
	for _, v := range []string{env.From, env.To} {
		if releases[v], err = c.Release(ctx, simtest.BuildSpec{Version: v}); err != nil {
			return res, err
		}
	}

	cl := &pinClient{c: c}
	cctx, stopClient := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); cl.run(cctx) }()
	defer func() { stopClient(); wg.Wait() }()

	for k := 0; k < n; k++ {
		version := env.To
		if k%2 == 1 {
			version = env.From
		}
		res.Upgrades++
		id, err := c.Announce(ctx, 0, releases[version], "--allow-downgrade")
		if err != nil {
			return res, fmt.Errorf("upgrade %d to %s: announcing: %w", k+1, version, err)
		}
		p, err := c.WaitPlan(ctx, 0, id)
		if err != nil {
			return res, fmt.Errorf("upgrade %d to %s: %w", k+1, version, err)
		}
		logf("upgrade %d/%d to %s: %s in %s, %d pins acknowledged so far", k+1, n, version, p.Phase,
			p.Updated.Sub(p.Created).Round(time.Millisecond), cl.count())
		if !p.Succeeded() {
			return res, fmt.Errorf("upgrade %d to %s ended %s: %s", k+1, version, p.Phase, p.Reason)
		}
		res.Succeeded++
	}
	stopClient()
	wg.Wait()
	acked := cl.acked()
	res.PinsAcked = len(acked)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_ = simtest.WaitFor(wctx, "every acknowledged pin on every peer", func() bool {
		res.Missing = missing(wctx, c, acked)
		return len(res.Missing) == 0
	})
	res.PinsChecked = len(acked) - len(res.Missing)
	res.Took = time.Since(start)
	if len(res.Missing) > 0 {
		return res, fmt.Errorf("%w: %d of %d acknowledged pins missing on some peer (first %s)", ErrLostPins,
			len(res.Missing), len(acked), res.Missing[0])
	}
	return res, nil
}

// pinClient adds pins to the peers in turn, as a user of the cluster would,
// and remembers those acknowledged with 200. Refusals (a peer stopped for
// the switch) are retried on the next peer.
type pinClient struct {
	c  *harness.Cluster
	mu sync.Mutex
	ok []string
}

func (p *pinClient) run(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cid := harness.FakeCID("soak", k)
		peer := p.c.Peers[k%len(p.c.Peers)]
		code, _, err := simtest.Do(ctx, http.MethodPost, peer.APIURL, "/pins/"+cid+"?name=soak")
		if err == nil && code == http.StatusOK {
			p.mu.Lock()
			p.ok = append(p.ok, cid)
			p.mu.Unlock()
		}
	}
}

func (p *pinClient) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ok)
}

func (p *pinClient) acked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ok...)
}

// missing returns the CIDs of want absent from some peer's pinset.
func missing(ctx context.Context, c *harness.Cluster, want []string) []string {
	var out []string
	for _, peer := range c.Peers {
		have, err := pinset(ctx, peer.APIURL)
		if err != nil {
			return want
		}
		for _, cid := range want {
			if !have[cid] {
				out = append(out, cid)
			}
		}
	}
	return out
}

// pinset reads a peer's pins from GET /allocations?filter=all (an ndjson
// stream or an array; the cid a string or {"/": ...}).
func pinset(ctx context.Context, apiURL string) (map[string]bool, error) {
	code, body, err := simtest.Get(ctx, apiURL, "/allocations?filter=all")
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("listing pins at %s: %d %v", apiURL, code, err)
	}
	type entry struct{ CID json.RawMessage }
	var entries []entry
	body = bytes.TrimSpace(body)
	if bytes.HasPrefix(body, []byte("[")) {
		if err := json.Unmarshal(body, &entries); err != nil {
			return nil, fmt.Errorf("decoding pins at %s: %w", apiURL, err)
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(body))
		for dec.More() {
			var e entry
			if err := dec.Decode(&e); err != nil {
				return nil, fmt.Errorf("decoding pins at %s: %w", apiURL, err)
			}
			entries = append(entries, e)
		}
	}
	out := map[string]bool{}
	for _, e := range entries {
		var s string
		if json.Unmarshal(e.CID, &s) != nil {
			var link struct {
				Slash string `json:"/"`
			}
			_ = json.Unmarshal(e.CID, &link)
			s = link.Slash
		}
		out[s] = true
	}
	return out, nil
}
