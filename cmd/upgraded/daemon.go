package main

import (
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/daemon"
)

func daemonCmd() *cobra.Command {
	var (
		dir, logFormat string
		bootstrap      []string
	)
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Run the daemon beside the cluster peer",
		RunE: func(cmd *cobra.Command, _ []string) error {
			leanGC()
			cfg, err := loadConfig(dir)
			if err != nil {
				return err
			}
			if logFormat != "" {
				cfg.LogFormat = logFormat
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			log, err := newLogger(cfg.LogFormat)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			d, err := daemon.New(cmd.Context(), cfg, bootstrap, log)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	configFlag(c, &dir)
	c.Flags().StringSliceVar(&bootstrap, "bootstrap", nil, "other daemons to join (overrides the configured ones)")
	c.Flags().StringVar(&logFormat, "log-format", "", "json or console (overrides log_format in upgraded.json)")
	return c
}

// daemonGOGC is the daemon's garbage collection target, unless GOGC is set.
// The daemon idles beside its peer for months; its live heap is a few MB, and
// Go's default (100) lets the heap grow to twice that between collections.
// Measured idle at N=50 (50 daemons on one machine, 40 s): resident memory
// median 42.2 -> 39.0 MB, anonymous 15.7 -> 12.5 MB, CPU 1263 -> 1327 ticks
// for all 50 (within run-to-run noise).
const daemonGOGC = 50

// leanGC applies daemonGOGC unless the operator chose GOGC.
func leanGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(daemonGOGC)
	}
}
