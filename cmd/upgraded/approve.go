package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/coordination"
	"github.com/upgraded/upgraded/coordination/envelope"
	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/config"
	"github.com/upgraded/upgraded/internal/control"
)

// approveCmd builds `upgraded approve` and `upgraded reject`: an operator signs
// a decision on exactly the content of a proposed plan.
func approveCmd(decision string) *cobra.Command {
	var dir, keyFile string
	short := "Approve a proposed plan with an operator key (two-person rule)"
	if decision == "reject" {
		short = "Reject (withdraw) a proposed plan with an operator key"
	}
	c := &cobra.Command{
		Use:   decision + " PLAN-ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needConfig(dir); err != nil {
				return err
			}
			if keyFile == "" {
				return errors.New("--key FILE is required: the operator key that signs")
			}
			cfg, err := config.Load(dir)
			if err != nil {
				return err
			}
			key, err := envelope.LoadKeyFile(keyFile)
			if err != nil {
				return err
			}
			cl := control.NewClient(cfg.SocketPath())
			ans, err := cl.Plan(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("reading plan %s: %w", args[0], err)
			}
			if ans.Plan == nil {
				return fmt.Errorf("plan %s was refused: %s", args[0], ans.Rejected)
			}
			env, err := coordination.SealApproval(key, ans.Plan, decision)
			if err != nil {
				return err
			}
			p, err := cl.Approve(cmd.Context(), env)
			if err != nil {
				return fmt.Errorf("%s refused: %w", decision, err)
			}
			out := cmd.OutOrStdout()
			switch {
			case p.Phase == plan.PhaseProposed:
				fmt.Fprintf(out, "plan %s: %d of %d approvals; %d more needed\n", p.ID, len(p.Approvals), p.Policy.Threshold, p.Missing())
			default:
				fmt.Fprintf(out, "plan %s: %s (%s)\n", p.ID, p.Phase, p.Reason)
			}
			return nil
		},
	}
	configFlag(c, &dir)
	c.Flags().StringVar(&keyFile, "key", "", "operator key to sign with")
	return c
}
