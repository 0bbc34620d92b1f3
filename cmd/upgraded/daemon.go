package main

import (
	"os"
	"runtime"
	"strings"

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
			// Nothing reads a heap profile of the daemon, so it samples
			// none: the sampler's tables cost ~1.5 MB resident in every
			// daemon (MemStats.BuckHashSys). GODEBUG=memprofilerate=N
			// turns sampling back on, for a build that serves profiles.
			if !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
				runtime.MemProfileRate = 0
			}
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
			if os.Getenv("GOGC") == "" {
				d.LeanGC()
			}
			return d.Run(cmd.Context())
		},
	}
	configFlag(c, &dir)
	c.Flags().StringSliceVar(&bootstrap, "bootstrap", nil, "other daemons to join (overrides the configured ones)")
	c.Flags().StringVar(&logFormat, "log-format", "", "json or console (overrides log_format in upgraded.json)")
	return c
}
