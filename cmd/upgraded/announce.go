package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/coordination"
	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/p2p"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
)

func announceCmd() *cobra.Command {
	var (
		dir, version, keyFile, procedure, at      string
		artifacts, sums                           []string
		allowDowngrade, wait, allowFailed, dryRun bool
		timeout, settle, soak                     time.Duration
		maxUnavailable, canary                    int
	)
	c := &cobra.Command{
		Use:   "announce",
		Short: "Sign and announce an upgrade of the whole cluster to a version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(dir)
			if err != nil {
				return err
			}
			arts, err := pairArtifacts(artifacts, sums)
			if err != nil {
				return err
			}
			key, err := signingKey(cfg, keyFile)
			if err != nil {
				return err
			}
			ttl := cfg.AnnouncementTTL
			if cfg.Approvals > 1 { // a proposal waits for the other operators' approvals
				ttl = cfg.ProposalTTL
			}
			a, err := coordination.NewAnnouncement(version, arts, plan.Procedure(procedure), allowDowngrade, time.Now(), ttl)
			if err != nil {
				return err
			}
			a.MaxUnavailable, a.Settle, a.Canary, a.Soak, a.AllowFailedVersion = maxUnavailable, settle, canary, soak, allowFailed
			if a.At, err = parseAt(at, time.Now()); err != nil {
				return err
			}
			if !a.At.IsZero() && !a.At.Before(a.ExpiresAt) {
				return fmt.Errorf("--at %s is after the announcement expires (%s)", a.At.Format(time.RFC3339), a.ExpiresAt.Format(time.RFC3339))
			}
			if err := a.Validate(); err != nil {
				return err
			}
			env, err := coordination.SealAnnouncement(key, a)
			if err != nil {
				return err
			}
			cl := control.NewClient(cfg.SocketPath())
			if dryRun {
				d, err := cl.DryRun(cmd.Context(), env)
				if err != nil {
					return fmt.Errorf("announcement refused: %w", err)
				}
				printDryRun(cmd.OutOrStdout(), d)
				if d.Refusal != "" {
					return &exitError{code: 2, err: fmt.Errorf("the cluster would refuse it: %s", d.Refusal)}
				}
				return nil
			}
			p, err := cl.Announce(cmd.Context(), env)
			if err != nil {
				return fmt.Errorf("announcement refused: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "plan %s: %s upgrade of %d hosts to %s\n", p.ID, p.Procedure, len(p.Hosts), p.Version)
			if p.Phase == plan.PhaseProposed {
				fmt.Fprintf(out, "proposed: %d more approvals needed (upgraded approve %s --key FILE); expires %s\n",
					p.Missing(), p.ID, p.ExpiresAt.Local().Format(time.RFC1123))
			}
			if !wait {
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return waitPlan(ctx, cl, p.ID, out)
		},
	}
	configFlag(c, &dir)
	f := c.Flags()
	f.StringVar(&version, "version", "", "target version (what the new ipfs-cluster-service --version prints)")
	f.StringArrayVar(&artifacts, "artifact", nil, "a binary or release tarball: path, file://, http(s):// URL or /ipfs/CID (repeat for each)")
	f.StringArrayVar(&sums, "sha256", nil, "sha256 of the artifact given before it (one per --artifact, mandatory)")
	f.StringVar(&keyFile, "key", "", "operator key to sign with (default: the config folder's identity)")
	f.StringVar(&procedure, "procedure", string(plan.Auto), "auto (rolling when the RPC protocol is unchanged, else standard for crdt, bootstrap for raft), rolling, standard or bootstrap")
	f.IntVar(&maxUnavailable, "max-unavailable", 1, "rolling: peers upgraded at once (raft: capped to keep a majority)")
	f.DurationVar(&settle, "settle", 0, "rolling: wait between two batches, each peer watched meanwhile")
	f.IntVar(&canary, "canary", 0, "rolling: upgrade this many peers first and watch them for --soak before the rest")
	f.DurationVar(&soak, "soak", time.Minute, "rolling: how long the canaries must stay healthy")
	f.BoolVar(&allowFailed, "allow-failed-version", false, "accept a version that an earlier plan rolled back")
	f.StringVar(&at, "at", "", "start no earlier than this time: RFC 3339 (2026-11-25T02:00:00Z) or a delay (+30m)")
	f.BoolVar(&dryRun, "dry-run", false, "print what the cluster would do (hosts, order, steps, checks, artifacts) and do nothing")
	f.BoolVar(&allowDowngrade, "allow-downgrade", false, "accept a target older than the running version")
	f.BoolVar(&wait, "wait", false, "wait for the end; exit 0 only when every peer is verified at the target")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "how long --wait waits")
	return c
}

func pairArtifacts(srcs, sums []string) ([]plan.Artifact, error) {
	if len(srcs) == 0 {
		return nil, errors.New("at least one --artifact SRC --sha256 HEX is required")
	}
	if len(srcs) != len(sums) {
		return nil, fmt.Errorf("every --artifact needs its --sha256: got %d artifacts and %d checksums", len(srcs), len(sums))
	}
	arts := make([]plan.Artifact, len(srcs))
	for i := range srcs {
		arts[i] = plan.Artifact{Source: srcs[i], SHA256: sums[i]}
	}
	return arts, nil
}

func signingKey(cfg *config.Config, keyFile string) (crypto.PrivKey, error) {
	if keyFile != "" {
		return envelope.LoadKeyFile(keyFile)
	}
	return p2p.LoadOrCreateIdentity(cfg.IdentityFile())
}

// waitPlan follows a plan until it ends, printing each change of a host's
// step; it fails unless every peer was verified at the target.
func waitPlan(ctx context.Context, cl *control.Client, id string, out io.Writer) error {
	seen := map[string]string{}
	phase := ""
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ans, err := cl.Plan(ctx, id)
		if err == nil && ans.Plan != nil {
			p := ans.Plan
			control.PrintChanges(out, p, seen, &phase)
			if p.Phase.Terminal() {
				if p.Succeeded() {
					fmt.Fprintf(out, "done: every peer verified on %s\n", p.Version)
					return nil
				}
				return &exitError{code: 2, err: fmt.Errorf("plan %s ended %s: %s", p.ID, p.Phase, p.Reason)}
			}
		}
		select {
		case <-ctx.Done():
			return &exitError{code: 3, err: fmt.Errorf("gave up waiting for plan %s: %w", id, ctx.Err())}
		case <-tick.C:
		}
	}
}

func printDryRun(out io.Writer, d *coordination.DryRun) {
	fmt.Fprintf(out, "dry run of plan %s: upgrade to %s, signed by %s\n", d.Plan, d.Version, d.Signer)
	fmt.Fprintf(out, "procedure: %s\napprovals: %s\n", d.Choice, d.Approvals)
	if d.Refusal != "" {
		fmt.Fprintf(out, "REFUSED NOW: %s\n", d.Refusal)
	}
	fmt.Fprintln(out, "hosts, in order:")
	for i, h := range d.Hosts {
		fmt.Fprintf(out, "  %d. %s  cluster peer %s  %s  %s  %s\n", i+1, plan.ShortID(h.Host), h.ClusterPeer, h.Name, h.Version, h.Consensus)
	}
	fmt.Fprintln(out, "steps:")
	for i, s := range d.Steps {
		fmt.Fprintf(out, "  %d. %s\n", i+1, s)
	}
	fmt.Fprintln(out, "checks:")
	for _, c := range d.Checks {
		fmt.Fprintf(out, "  - %s\n", c)
	}
	fmt.Fprintln(out, "nothing was done.")
}

// parseAt reads --at: an RFC 3339 time or "+DURATION" from now.
func parseAt(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, ok := strings.CutPrefix(s, "+"); ok {
		dur, err := time.ParseDuration(d)
		if err != nil {
			return time.Time{}, fmt.Errorf("--at %q: %w", s, err)
		}
		return now.Add(dur).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-11-25T02:00:00Z) or +DURATION: %w", s, err)
	}
	return t.UTC(), nil
}
