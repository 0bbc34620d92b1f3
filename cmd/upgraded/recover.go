package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/statebackup"
)

type recoverCLI struct {
	dir    string
	dryRun bool
	yes    bool
	from   string
	asJSON bool
}

func recoverCmd() *cobra.Command {
	var r recoverCLI
	c := &cobra.Command{
		Use:   "recover",
		Short: "Rebuild the cluster's pinset from the best copy any host holds",
		Long: `recover asks every daemon what state its host holds (live pinset, backups, state folders),
chooses the best copy (most pins, verified, then freshest) and says why, and prints the steps:
every other peer is stopped and cleaned (its old state is copied to backups and kept), the peer of
the host holding the copy is rebuilt from it and started alone, then the others join it with
--bootstrap, each verified. --dry-run stops after printing; --from FILE rebuilds this host's peer
from an export file instead. Without --yes, recover asks before changing anything.`,
		Args: cobra.NoArgs,
		RunE: r.run,
	}
	configFlag(c, &r.dir)
	c.Flags().BoolVar(&r.dryRun, "dry-run", false, "print the inventory, the choice and the steps; change nothing")
	c.Flags().BoolVar(&r.yes, "yes", false, "carry the plan out without asking")
	c.Flags().StringVar(&r.from, "from", "", "rebuild from this export file (`state export` or a backup's ndjson) on this host")
	c.Flags().BoolVar(&r.asJSON, "json", false, "print the report as one JSON object")
	return c
}

func (r *recoverCLI) run(cmd *cobra.Command, _ []string) error {
	if err := needConfig(r.dir); err != nil {
		return err
	}
	cfg, err := config.Load(r.dir)
	if err != nil {
		return err
	}
	req := control.RecoverRequest{DryRun: r.dryRun || !r.yes}
	if r.from != "" {
		if req.From, err = filepath.Abs(r.from); err != nil {
			return err
		}
	}
	cl := control.NewClient(cfg.SocketPath())
	out := cmd.OutOrStdout()
	rep, err := cl.Recover(cmd.Context(), req)
	if rep == nil || r.dryRun || err != nil {
		return r.show(out, rep, err)
	}
	if !r.yes {
		if r.asJSON {
			return errors.New("--json needs --yes or --dry-run: there is no one to ask")
		}
		renderRecover(out, rep)
		if !confirmRecovery(cmd.InOrStdin(), out) {
			return errors.New("recovery not confirmed; nothing was changed")
		}
		req.DryRun, req.Expect = false, &rep.Choice.Source
		rep, err = cl.Recover(cmd.Context(), req)
	}
	return r.show(out, rep, err)
}

// show prints the report (when there is one) and returns err, so a failed recovery still shows how far it went.
func (r *recoverCLI) show(w io.Writer, rep *control.RecoverReport, err error) error {
	if rep != nil {
		if r.asJSON {
			data, jerr := json.Marshal(rep)
			if jerr != nil {
				return jerr
			}
			fmt.Fprintln(w, string(data))
		} else {
			renderRecover(w, rep)
		}
	}
	return err
}

func confirmRecovery(in io.Reader, w io.Writer) bool {
	fmt.Fprint(w, "Carry out this recovery? Peers will be stopped and cleaned (old state kept) [y/N] ")
	line, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

func renderRecover(w io.Writer, rep *control.RecoverReport) {
	renderInventories(w, rep.Inventories)
	if c := rep.Choice; c != nil {
		fmt.Fprintln(w)
		for _, n := range c.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
		if c.Source.Host != "" {
			fmt.Fprintf(w, "chosen: %s\nwhy: %s\n", c.Source, c.Reason)
		}
	}
	if p := rep.Plan; p != nil {
		fmt.Fprintln(w, "\nsteps:")
		for i, s := range p.Steps {
			fmt.Fprintf(w, "  %d. %s %s: %s\n", i+1, plan.ShortID(s.Host), s.Action, s.Detail)
		}
		for _, h := range p.Untouched {
			fmt.Fprintf(w, "  (host %s did not answer and is not touched)\n", plan.ShortID(h))
		}
	}
	if len(rep.Results) > 0 {
		fmt.Fprintf(w, "\nrecovery %s:\n", rep.ID)
		for _, res := range rep.Results {
			status, detail := "ok", res.Detail
			if !res.OK {
				status, detail = "FAILED", res.Error
			}
			fmt.Fprintf(w, "  %s %s %s: %s\n", status, plan.ShortID(res.Step.Host), res.Step.Action, detail)
		}
	}
	switch {
	case rep.Error != "":
		fmt.Fprintf(w, "\nrecovery failed: %s\n", rep.Error)
	case rep.DryRun:
		fmt.Fprintln(w, "\ndry run: nothing was changed")
	default:
		fmt.Fprintln(w, "\nrecovery done: every peer verified")
	}
}

func renderInventories(w io.Writer, invs []statebackup.HostInventory) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tNAME\tVERSION\tLIVE PINS\tBACKUPS (verified, most pins)\tSTATE FOLDERS")
	for _, inv := range invs {
		if !inv.Reachable {
			fmt.Fprintf(tw, "%s\t%s\t-\tunreachable: %s\t-\t-\n", plan.ShortID(inv.Host), orDash(inv.Name), inv.Error)
			continue
		}
		live := fmt.Sprint(inv.LivePins)
		if inv.LivePins < 0 {
			live = "peer down"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", plan.ShortID(inv.Host), orDash(inv.Name), orDash(inv.Version), live,
			backupsSummary(inv.Backups), foldersSummary(inv.Folders))
	}
	_ = tw.Flush()
}

func backupsSummary(bs []statebackup.BackupInfo) string {
	good, most := 0, -1
	for _, b := range bs {
		if b.Verified {
			good++
			most = max(most, b.Manifest.Pins)
		}
	}
	if len(bs) == 0 {
		return "none"
	}
	s := fmt.Sprintf("%d of %d", good, len(bs))
	if most >= 0 {
		s += fmt.Sprintf(", %d pins", most)
	}
	return s
}

func foldersSummary(fs []statebackup.FolderInfo) string {
	if len(fs) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("%s (%s, %s ago)", f.Name, humanSize(f.Size),
			time.Since(f.Modified).Round(time.Second)))
	}
	return strings.Join(parts, ", ")
}
