package main

import (
	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
)

func inspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect JOB [JOB...]",
		Short: "Print jobs' records as JSON",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			var jobs []*gantry.Job
			for _, id := range args {
				j, err := cl.Get(c.Context(), id)
				if err != nil {
					return err
				}
				jobs = append(jobs, j)
			}
			if len(jobs) == 1 {
				return writeJSON(c.OutOrStdout(), jobs[0])
			}
			return writeJSON(c.OutOrStdout(), jobs)
		},
	}
}
