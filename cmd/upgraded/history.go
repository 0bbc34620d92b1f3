package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/upgraded/upgraded/coordination/plan"
	"github.com/upgraded/upgraded/internal/history"
)

func historyCmd() *cobra.Command {
	var (
		dir, planID string
		asJSON      bool
	)
	c := &cobra.Command{
		Use:   "history",
		Short: "List every plan (signer, outcome), or with --plan every step of one, as this daemon recorded them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(dir)
			if err != nil {
				return err
			}
			events, err := history.Read(cfg.HistoryFile())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				for _, e := range events {
					if planID == "" || e.Plan == planID {
						_ = enc.Encode(e)
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
			defer tw.Flush()
			if planID != "" {
				fmt.Fprintln(tw, "TIME\tWHAT\tWHO\tSTATE\tDETAIL")
				for _, e := range events {
					if e.Plan != planID {
						continue
					}
					who := plan.ShortID(e.Host)
					if e.Kind != "host" {
						who = plan.ShortID(e.Signer)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format("2006-01-02 15:04:05.000"), e.Kind, who, e.State, e.Detail)
				}
				return nil
			}
			fmt.Fprintln(tw, "PLAN\tVERSION\tSIGNER\tANNOUNCED\tOUTCOME\tDETAIL")
			for _, s := range summarise(events) {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Plan, s.Version, plan.ShortID(s.Signer), s.At.Local().Format("2006-01-02 15:04:05"), s.State, s.Detail)
			}
			return nil
		},
	}
	configFlag(c, &dir)
	c.Flags().StringVar(&planID, "plan", "", "show every step of this plan")
	c.Flags().BoolVar(&asJSON, "json", false, "print the events as JSON lines")
	return c
}

// summarise keeps one line per plan: when it was announced and its last phase.
func summarise(events []history.Event) []history.Event {
	var order []string
	byPlan := map[string]*history.Event{}
	for _, e := range events {
		if e.Kind != "plan" {
			continue
		}
		s, ok := byPlan[e.Plan]
		if !ok {
			cp := e
			byPlan[e.Plan], order = &cp, append(order, e.Plan)
			continue
		}
		s.State, s.Detail = e.State, e.Detail
	}
	out := make([]history.Event, 0, len(order))
	for _, id := range order {
		out = append(out, *byPlan[id])
	}
	return out
}
