package main

import (
	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry/api"
)

func inspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect JOB [JOB...]",
		Short: "Print jobs' records as JSON",
		Args:  cobra.MinimumNArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			jobs, err := getJobs(c.Context(), cl, args)
			if err != nil {
				return err
			}
			if len(jobs) == 1 {
				return writeJSON(c.OutOrStdout(), jobs[0])
			}
			return writeJSON(c.OutOrStdout(), jobs)
		}),
	}
}
