// Command upgraded upgrades the IPFS Cluster peers of a whole cluster
// together, from a daemon running beside each peer. This file only parses
// the command line and wires components; the work is in the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/config"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// exitError carries a specific exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "upgraded:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return rootCmd().ExecuteContext(ctx)
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "upgraded",
		Short: "Upgrade every IPFS Cluster peer of a cluster together, without losing the pinset",
		Long: `upgraded runs beside every ipfs-cluster-service peer. The daemons agree on one target
version (raft among them, over a libp2p swarm keyed by the cluster secret), stage and
verify the binaries, back up and verify the pinset, restart their peers in sync, prove
every peer healthy and roll everything back when one is not.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(initCmd(), idCmd(), keygenCmd(), daemonCmd(), announceCmd(), statusCmd(), demoCmd(), backupCmd())
	root.AddCommand(serviceCmd())
	root.AddCommand(approveCmd("approve"), approveCmd("reject"))
	root.AddCommand(historyCmd())
	root.AddCommand(recoverCmd())
	root.AddCommand(planOpCmd("pause", "Hold the running plan where it is (no new step starts; failures still roll back)"),
		planOpCmd("resume", "Let a paused plan go on"),
		planOpCmd("abort", "Stop the running plan: failed if nothing was stopped yet, else a clean rollback everywhere"))
	return root
}

// configFlag adds --config, defaulting to $UPGRADED_PATH.
func configFlag(c *cobra.Command, dir *string) {
	c.Flags().StringVar(dir, "config", os.Getenv("UPGRADED_PATH"), "upgraded's config folder [$UPGRADED_PATH]")
}

// loadConfig reads the configuration of the --config folder.
func loadConfig(dir string) (*config.Config, error) {
	if err := needConfig(dir); err != nil {
		return nil, err
	}
	return config.Load(dir)
}

func needConfig(dir string) error {
	if dir == "" {
		return errors.New("--config DIR (or $UPGRADED_PATH) is required")
	}
	return nil
}

func newLogger(format string) (*zap.Logger, error) {
	var cfg zap.Config
	if format == "json" {
		cfg = zap.NewProductionConfig()
	} else {
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		cfg.Development = false
		cfg.DisableStacktrace = true
	}
	cfg.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	if lvl := os.Getenv("UPGRADED_LOG_LEVEL"); lvl != "" {
		if err := cfg.Level.UnmarshalText([]byte(lvl)); err != nil {
			return nil, fmt.Errorf("UPGRADED_LOG_LEVEL %q: %w", lvl, err)
		}
	}
	return cfg.Build()
}
