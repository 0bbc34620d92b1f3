package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/control"
)

func statusCmd() *cobra.Command {
	var (
		dir         string
		asJSON, wat bool
	)
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the plan and every peer: id, version, phase, pins, last error",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(dir)
			if err != nil {
				return err
			}
			cl := control.NewClient(cfg.SocketPath())
			out := cmd.OutOrStdout()
			for {
				st, err := cl.Status(cmd.Context())
				if err != nil {
					return err
				}
				r := control.MakeReport(st, time.Now())
				if asJSON {
					b, _ := json.Marshal(r)
					fmt.Fprintln(out, string(b))
				} else if wat {
					fmt.Fprint(out, "\033[H\033[2J")
					control.RenderWatch(out, r, time.Now())
				} else {
					control.RenderTable(out, r)
				}
				if !wat {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	configFlag(c, &dir)
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	c.Flags().BoolVar(&wat, "watch", false, "refresh every second until interrupted")
	return c
}
