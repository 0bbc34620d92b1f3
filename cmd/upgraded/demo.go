package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/internal/demo"
)

func demoCmd() *cobra.Command {
	o := demo.Options{}
	c := &cobra.Command{
		Use:   "demo",
		Short: "Upgrade a local cluster of simulated peers end to end, showing progress (needs the source tree and Go)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding this binary: %w", err)
			}
			o.UpgradedBin, o.Out = self, cmd.OutOrStdout()
			return demo.Run(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.IntVar(&o.Peers, "peers", 3, "how many peers")
	f.StringVar(&o.Consensus, "consensus", "crdt", "crdt or raft")
	f.StringVar(&o.From, "from", "1.0.8", "version the cluster runs first")
	f.StringVar(&o.To, "to", "1.1.6", "version to upgrade to")
	f.IntVar(&o.Pins, "pins", 100, "how many pins to add before the upgrade")
	f.StringVar(&o.Dir, "dir", "", "keep everything in this folder (default: a temporary one, removed after)")
	return c
}
