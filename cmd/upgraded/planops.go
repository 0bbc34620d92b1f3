package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/control"
)

// planOpCmd builds `upgraded pause|resume|abort [PLAN-ID]`.
func planOpCmd(op, short string) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   op + " [PLAN-ID]",
		Short: short,
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(dir)
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			p, err := control.NewClient(cfg.SocketPath()).Operate(cmd.Context(), id, op)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "plan %s: %s; %s\n", p.ID, p.Phase, p.Control)
			return nil
		},
	}
	configFlag(c, &dir)
	return c
}
