package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func pushCmd(g *globals) *cobra.Command {
	var (
		to    []string
		quiet bool
	)
	c := &cobra.Command{
		Use:   "push JOB [--to REF]...",
		Short: "Push a finished job's image again, to its own references or to --to",
		Args:  exactArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			progress := pushProgress(c.ErrOrStderr(), quiet)
			j, err := cl.PushProgress(c.Context(), args[0], to, progress)
			progress.end()
			if err != nil {
				return err
			}
			refs := to
			if len(refs) == 0 {
				refs = j.Spec.Push
			}
			for _, p := range j.Pushes {
				for _, r := range refs {
					if t, err := gantry.ParseRef(r); err == nil && t.Name() == p.Ref {
						fmt.Fprintf(c.OutOrStdout(), "pushed %s@%s\n", p.Ref, p.Digest)
					}
				}
			}
			return nil
		}),
	}
	c.Flags().StringArrayVar(&to, "to", nil, "push to this reference instead of the job's own (repeatable)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the pushed references, no progress")
	return c
}
