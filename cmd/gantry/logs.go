package main

import (
	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry/api"
)

func logsCmd(g *globals) *cobra.Command {
	var follow, raw bool
	c := &cobra.Command{
		Use:   "logs [-f] [--raw] JOB",
		Short: "Print a job's log: the build, the training output and the push",
		Long: `Logs prints a job's log. On a terminal, what the build and the training program
printed is shown with control characters escaped (\x1b, \x07, \u009b, ...), and
gantryd's own lines are dimmed; --raw writes the log's bytes as they are.`,
		Args: exactArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			lw := newLogWriter(c.OutOrStdout(), logModeFor(c.OutOrStdout(), raw))
			if err := cl.Logs(c.Context(), args[0], follow, lw); err != nil {
				return err
			}
			return lw.Close()
		}),
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the job ends")
	c.Flags().BoolVar(&raw, "raw", false, "write the log as it is stored, control characters and all")
	return c
}
