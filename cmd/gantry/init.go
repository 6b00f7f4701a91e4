package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry/trainer"
)

func initCmd() *cobra.Command {
	var base string
	c := &cobra.Command{
		Use:   "init DIR",
		Short: "Write the reference Iris trainer (app.py, requirements.txt, Dockerfile, gantry_metrics.py) into DIR",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := trainer.Write(args[0], base); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote the Iris trainer to %s; submit it with: gantry submit %s --wait\n", args[0], args[0])
			return nil
		},
	}
	c.Flags().StringVar(&base, "base", "", "base image for the Dockerfile's BASE build argument (default: a public Python image)")
	return c
}
