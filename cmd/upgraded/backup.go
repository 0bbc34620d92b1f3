package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
	"github.com/upgraded/upgraded/statebackup"
)

// backupCLI is what every `upgraded backup` subcommand shares.
type backupCLI struct {
	dir    string
	asJSON bool
}

func backupCmd() *cobra.Command {
	var b backupCLI
	c := &cobra.Command{
		Use:   "backup",
		Short: "Create, list, verify, restore and prune backups of this host's pinset",
		Long: `Backups live in the backups/ folder of the config folder: live exports of the pinset
(taken while the peer runs), offline state exports and state-folder copies (taken by plans while
the peer is stopped), each with a manifest (kind, version, peer, pin count, sha256, time, plan).
create, restore and prune go through the running daemon; list and verify read the folder
directly when no daemon answers.`,
	}
	c.PersistentFlags().StringVar(&b.dir, "config", os.Getenv("UPGRADED_PATH"), "upgraded's config folder [$UPGRADED_PATH]")
	c.PersistentFlags().BoolVar(&b.asJSON, "json", false, "print JSON instead of text")
	c.AddCommand(
		&cobra.Command{Use: "create", Short: "Back up the running peer's pinset now (live export, verified)",
			Args: cobra.NoArgs, RunE: b.create},
		&cobra.Command{Use: "list", Short: "List backups, newest first", Args: cobra.NoArgs, RunE: b.list},
		&cobra.Command{Use: "verify ID", Short: "Re-read a backup: its sha256 and pin count must match its manifest",
			Args: cobra.ExactArgs(1), RunE: b.verify},
		&cobra.Command{Use: "restore ID", Short: "Verify a backup, then stop the peer, import it, start the peer and check its pins",
			Args: cobra.ExactArgs(1), RunE: b.restore},
		&cobra.Command{Use: "prune", Short: "Keep the newest backups (backups.keep) and every backup of the last plan; remove the rest",
			Args: cobra.NoArgs, RunE: b.prune},
	)
	return c
}

func (b *backupCLI) client() (*config.Config, *control.Client, error) {
	if err := needConfig(b.dir); err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(b.dir)
	if err != nil {
		return nil, nil, err
	}
	return cfg, control.NewClient(cfg.SocketPath()), nil
}

func (b *backupCLI) create(cmd *cobra.Command, _ []string) error {
	_, cl, err := b.client()
	if err != nil {
		return err
	}
	m, err := cl.CreateBackup(cmd.Context())
	if err != nil {
		return fmt.Errorf("backup not taken: %w", err)
	}
	return b.print(cmd.OutOrStdout(), m, func(w io.Writer) {
		fmt.Fprintf(w, "backup %s: %d pins of %s, %s, verified\n", m.ID, m.Pins, m.ClusterVersion, humanSize(m.Size))
	})
}

func (b *backupCLI) list(cmd *cobra.Command, _ []string) error {
	cfg, cl, err := b.client()
	if err != nil {
		return err
	}
	list, err := cl.ListBackups(cmd.Context())
	if errors.Is(err, control.ErrNoDaemon) {
		list, err = localList(cfg)
	}
	if err != nil {
		return err
	}
	if list == nil {
		list = []*statebackup.Manifest{}
	}
	return b.print(cmd.OutOrStdout(), list, func(w io.Writer) { renderBackups(w, list) })
}

func localList(cfg *config.Config) ([]*statebackup.Manifest, error) {
	store, err := statebackup.Open(cfg.BackupDir(), nil)
	if err != nil {
		return nil, err
	}
	return store.List()
}

func (b *backupCLI) verify(cmd *cobra.Command, args []string) error {
	cfg, cl, err := b.client()
	if err != nil {
		return err
	}
	m, err := cl.VerifyBackup(cmd.Context(), args[0])
	if errors.Is(err, control.ErrNoDaemon) {
		m, err = localVerify(cmd.Context(), cfg, args[0])
	}
	if err != nil {
		return fmt.Errorf("backup %s failed verification: %w", args[0], err)
	}
	return b.print(cmd.OutOrStdout(), m, func(w io.Writer) {
		fmt.Fprintf(w, "backup %s is good: sha256 matches, %s\n", m.ID, pinsText(m.Pins))
	})
}

func localVerify(ctx context.Context, cfg *config.Config, id string) (*statebackup.Manifest, error) {
	store, err := statebackup.Open(cfg.BackupDir(), nil)
	if err != nil {
		return nil, err
	}
	return store.Verify(ctx, id)
}

func (b *backupCLI) restore(cmd *cobra.Command, args []string) error {
	_, cl, err := b.client()
	if err != nil {
		return err
	}
	rep, err := cl.RestoreBackup(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	return b.print(cmd.OutOrStdout(), rep, func(w io.Writer) {
		fmt.Fprintf(w, "backup %s restored (%s) in %s; the peer answers with %s\n", rep.Backup.ID, rep.Restored,
			rep.Took.Round(time.Millisecond), pinsText(rep.Pins))
	})
}

func (b *backupCLI) prune(cmd *cobra.Command, _ []string) error {
	_, cl, err := b.client()
	if err != nil {
		return err
	}
	rep, err := cl.PruneBackups(cmd.Context())
	if err != nil {
		return err
	}
	return b.print(cmd.OutOrStdout(), rep, func(w io.Writer) {
		for _, m := range rep.Removed {
			fmt.Fprintf(w, "removed %s\n", m.ID)
		}
		fmt.Fprintf(w, "%d backups removed, %d kept\n", len(rep.Removed), rep.Kept)
	})
}

// print writes v as one JSON object with --json, or as text otherwise.
func (b *backupCLI) print(w io.Writer, v any, text func(io.Writer)) error {
	if !b.asJSON {
		text(w)
		return nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

func renderBackups(w io.Writer, list []*statebackup.Manifest) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tVERSION\tPINS\tSIZE\tCREATED\tPLAN")
	for _, m := range list {
		pins := fmt.Sprint(m.Pins)
		if m.Pins < 0 {
			pins = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Kind, orDash(m.ClusterVersion), pins, humanSize(m.Size),
			m.Created.Local().Format("2006-01-02 15:04:05"), orDash(m.PlanID))
	}
	_ = tw.Flush()
}

func pinsText(n int) string {
	if n < 0 {
		return "pin count unknown (state-folder copy)"
	}
	return fmt.Sprintf("%d pins", n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
