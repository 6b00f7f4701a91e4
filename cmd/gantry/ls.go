// gantry ls: the table of jobs.

package main

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func lsCmd(g *globals) *cobra.Command {
	var (
		asJSON bool
		limit  int
		states []string
	)
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list", "ps"},
		Short:   "List jobs, newest first",
		Args:    exactArgs(0),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			o := gantry.JobFilter{Limit: limit}
			for _, s := range states {
				o.States = append(o.States, gantry.State(s))
			}
			jobs, _, err := cl.List(c.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), jobs)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "JOB ID\tSTATE\tACCURACY\tPUSHED\tCREATED\tDURATION")
			now := time.Now()
			for _, j := range jobs {
				acc := "-"
				if j.Metrics.Accuracy != nil {
					acc = strconv.FormatFloat(*j.Metrics.Accuracy, 'f', 4, 64)
				}
				pushed := "-"
				if len(j.Pushes) > 0 {
					pushed = j.Pushes[0].Ref
					if len(j.Pushes) > 1 {
						pushed += fmt.Sprintf(" (+%d)", len(j.Pushes)-1)
					}
				}
				end := now
				if j.Times.Finished != nil {
					end = *j.Times.Finished
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s\n", j.ID, j.State, acc, pushed,
					human(now.Sub(j.Times.Created)), human(end.Sub(j.Times.Created)))
			}
			return tw.Flush()
		}),
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON")
	c.Flags().IntVarP(&limit, "limit", "n", 50, "show at most this many jobs")
	c.Flags().StringArrayVar(&states, "state", nil, "show only jobs in this state (repeatable)")
	return c
}

func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
