package main

import (
	"github.com/spf13/cobra"
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
			jobs, err := getJobs(c.Context(), cl, args)
			if err != nil {
				return err
			}
			if len(jobs) == 1 {
				return writeJSON(c.OutOrStdout(), jobs[0])
			}
			return writeJSON(c.OutOrStdout(), jobs)
		},
	}
}
