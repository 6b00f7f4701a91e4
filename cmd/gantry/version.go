package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's and the daemon's versions",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			out := c.OutOrStdout()
			fmt.Fprintf(out, "client: %s (API %s)\n", gantry.Version, api.Version)
			cl, err := g.client()
			if err != nil {
				return err
			}
			v, err := cl.Version(c.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "gantryd: %s (API %s)\nengine: %s (API %s)\n", v.Version, v.APIVersion, v.Engine, v.EngineAPI)
			return nil
		},
	}
}
