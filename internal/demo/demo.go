// Package demo runs `upgraded demo`: a local cluster of simulated IPFS Cluster
// peers, each with a real upgraded daemon, upgraded end to end by one signed
// announcement, with its progress shown.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/clustersim/simtest"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/internal/harness"
)

// Options of the demo.
type Options struct {
	Peers       int
	Consensus   string
	From, To    string
	Pins        int
	Dir         string // work folder; a temporary one (removed after) when empty
	UpgradedBin string
	Out         io.Writer
}

// Run plays the demo and reports an error unless the upgrade succeeded with
// every pin on every peer.
func Run(ctx context.Context, o Options) error {
	start := time.Now()
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "upgraded-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.Dir = dir
	}
	say := func(format string, args ...any) {
		fmt.Fprintf(o.Out, "==> "+format+"\n", args...)
	}
	say("building the cluster-peer simulator %s and %s, and setting up %d %s peers in %s", o.From, o.To, o.Peers, o.Consensus, o.Dir)
	c, err := harness.Setup(ctx, harness.Options{Root: o.Dir, Peers: o.Peers, Consensus: o.Consensus,
		From: simtest.BuildSpec{Version: o.From}, UpgradedBin: o.UpgradedBin,
		Tune: func(c *config.Config) { c.Timeouts.Verify = 30 * time.Second }})
	if err != nil {
		return err
	}
	defer c.Close()
	say("starting %d upgraded daemons; each starts its cluster peer (logs: %s)", o.Peers, filepath.Join(o.Dir, "upgraded*.log"))
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.Start(wctx); err != nil {
		return err
	}
	say("pinning %d CIDs through peer 0", o.Pins)
	if _, err := c.AddPins(wctx, 0, o.Pins, "demo"); err != nil {
		return err
	}
	if err := c.WaitPins(wctx, o.Pins); err != nil {
		return err
	}
	printViews(o.Out, "before", c.Views(ctx))
	release, err := c.Release(ctx, simtest.BuildSpec{Version: o.To})
	if err != nil {
		return err
	}
	say("announcing the upgrade to %s, signed by operator key %s", o.To, c.OperatorID)
	id, err := c.Announce(ctx, 0, release)
	if err != nil {
		return err
	}
	p, err := follow(ctx, c, id, o.Out)
	if err != nil {
		return err
	}
	views := c.Views(ctx)
	printViews(o.Out, "after", views)
	if !p.Succeeded() {
		return fmt.Errorf("plan %s ended %s: %s", p.ID, p.Phase, p.Reason)
	}
	for i, v := range views {
		if v.Version != o.To || v.Pins < o.Pins {
			return fmt.Errorf("peer %d: version %s with %d pins after the upgrade", i, v.Version, v.Pins)
		}
	}
	say("done in %s: every peer on %s with all %d pins", time.Since(start).Round(100*time.Millisecond), o.To, o.Pins)
	return nil
}

// follow prints every change of the plan as daemon 0 sees it, until it ends.
func follow(ctx context.Context, c *harness.Cluster, id string, out io.Writer) (*plan.Plan, error) {
	seen, phase := map[string]string{}, ""
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := c.Status(ctx, 0); err == nil && st.Plan != nil && st.Plan.ID == id {
			control.PrintChanges(out, st.Plan, seen, &phase)
			if st.Plan.Phase.Terminal() {
				return st.Plan, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("plan %s did not end: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
}

func printViews(w io.Writer, when string, views []harness.PeerView) {
	fmt.Fprintf(w, "\n%s:\n", when)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PEER\tVERSION\tPINS")
	for i, v := range views {
		if v.Err != nil {
			fmt.Fprintf(tw, "  %d\t-\t(%v)\n", i, v.Err)
			continue
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\n", i, v.Version, v.Pins)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
