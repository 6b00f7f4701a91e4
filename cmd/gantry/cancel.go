package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func cancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel JOB [JOB...]",
		Short: "Cancel jobs: a queued job never starts; a build, container or push under way is stopped",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
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
		},
	}
}

// waitEnd polls job id until it is terminal.
func waitEnd(ctx context.Context, cl *api.Client, id string) (*gantry.Job, error) {
	for {
		j, err := cl.Get(ctx, id)
		if err != nil || j.State.Terminal() {
			return j, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
