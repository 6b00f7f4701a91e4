package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry/api"
)

func cancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel JOB [JOB...]",
		Short: "Cancel jobs: a queued job never starts; a build, container or push under way is stopped",
		Args:  cobra.MinimumNArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			var failed error
			for _, id := range args {
				j, err := cl.Cancel(c.Context(), id)
				if err == nil && !j.State.Terminal() {
					j, err = waitEnd(c.Context(), cl, id)
				}
				if err != nil {
					fmt.Fprintln(c.ErrOrStderr(), "gantry:", err)
					failed = &exitError{code: exitFailed}
					continue
				}
				fmt.Fprintln(c.OutOrStdout(), outcome(j))
			}
			return failed
		}),
	}
}
