package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func submitCmd(g *globals) *cobra.Command {
	var (
		spec        gantry.Spec
		dockerfile  string
		buildArgs   []string
		minAccuracy float64
		wait, quiet bool
		raw         bool
		memory      string
		maxLog      string
		timeouts    [3]time.Duration
	)
	c := &cobra.Command{
		Use:   "submit [OPTIONS] CONTEXT",
		Short: "Submit a job: build CONTEXT, train, gate, push",
		Long: `Submit sends the build context CONTEXT (honouring its .dockerignore) to gantryd
and prints the job ID. With --wait it shows the job's progress and exits with
its outcome: 0 succeeded, 1 failed, 3 rejected by the gate, 4 canceled.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			dir := args[0]
			rel, err := dockerfileInContext(dir, dockerfile)
			if err != nil {
				return &exitError{code: exitUsage, msg: "gantry: " + err.Error()}
			}
			spec.Build.Dockerfile = rel
			spec.Build.BuildArgs = map[string]string{}
			for _, kv := range buildArgs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok { // like docker build: take the value from the environment
					v, ok = os.LookupEnv(k)
					if !ok {
						continue
					}
				}
				spec.Build.BuildArgs[k] = v
			}
			if c.Flags().Changed("min-accuracy") {
				spec.MinAccuracy = &minAccuracy
			}
			if spec.Resources.Memory, err = gantry.ParseBytes(memory); err != nil {
				return &exitError{code: exitUsage, msg: "gantry: --memory: " + err.Error()}
			}
			if spec.Resources.LogBytes, err = gantry.ParseBytes(maxLog); err != nil {
				return &exitError{code: exitUsage, msg: "gantry: --max-log: " + err.Error()}
			}
			spec.Timeouts = gantry.Timeouts{
				Build: gantry.Duration(timeouts[0]), Train: gantry.Duration(timeouts[1]), Push: gantry.Duration(timeouts[2]),
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			tr, err := tarContext(dir, rel)
			if err != nil {
				return err
			}
			defer tr.Close()
			j, err := cl.Submit(ctx, spec, tr)
			if err != nil {
				return err
			}
			if !wait {
				fmt.Fprintln(c.OutOrStdout(), j.ID)
				return nil
			}
			if !quiet {
				fmt.Fprintf(c.ErrOrStderr(), "job %s submitted\n", j.ID)
			}
			return waitJob(ctx, cl, j.ID, c.OutOrStdout(), c.ErrOrStderr(), quiet, raw)
		},
	}
	f := c.Flags()
	f.StringVarP(&dockerfile, "file", "f", "", "Dockerfile path (default: CONTEXT/Dockerfile)")
	f.StringArrayVar(&buildArgs, "build-arg", nil, "build-time variable, KEY=VALUE (repeatable)")
	f.StringVar(&spec.Build.Target, "target", "", "build stage to build")
	f.StringArrayVar(&spec.Push, "push", nil, "push the image to REF when the job passes (repeatable)")
	f.Float64Var(&minAccuracy, "min-accuracy", 0, "gate: push only when the accuracy is at least this (0..1)")
	f.StringVar(&spec.MetricRegex, "metric-regex", "", "regexp whose first group is the accuracy (default: lines like 'accuracy: 0.97')")
	f.DurationVar(&timeouts[0], "build-timeout", 0, "limit on the build (default: gantryd's)")
	f.DurationVar(&timeouts[1], "train-timeout", 0, "limit on the training (default: gantryd's)")
	f.DurationVar(&timeouts[2], "push-timeout", 0, "limit on the push, retries included (default: gantryd's)")
	f.StringVarP(&memory, "memory", "m", "", "memory limit of the training container, e.g. 2g (default: gantryd's)")
	f.Float64Var(&spec.Resources.CPUs, "cpus", 0, "CPU limit of the training container (default: gantryd's)")
	f.Int64Var(&spec.Resources.PidsLimit, "pids-limit", 0, "process limit of the training container (default: gantryd's)")
	f.StringVar(&maxLog, "max-log", "", "training output kept, e.g. 64m (default: gantryd's)")
	f.StringVar(&spec.Promote, "promote", "", "after the push, move this tag to the image only when its accuracy beats the tag's current image")
	f.Float64Var(&spec.MinImprovement, "min-improvement", 0, "with --promote, how much better the accuracy must be (default 0: strictly better)")
	f.StringVar(&spec.Sandbox.Network, "network", "", "network for the training container, one gantryd's policy allows (default: none; see gantry info)")
	f.StringArrayVar(&spec.Sandbox.CapAdd, "cap-add", nil, "capability the training container keeps, one gantryd's policy allows (default: all dropped; repeatable; see gantry info)")
	f.BoolVar(&wait, "wait", false, "wait for the job to end, showing its progress")
	f.BoolVarP(&quiet, "quiet", "q", false, "with --wait, show only the outcome")
	f.BoolVar(&raw, "raw", false, "with --wait, write the job's output as it is, control characters and all (no live display)")
	return c
}

// waitJob shows the job until it ends, as gantry watch does (with quiet,
// nothing), then prints its outcome to out and returns the exit code it
// calls for.
func waitJob(ctx context.Context, cl *api.Client, id string, out, errOut io.Writer, quiet, raw bool) error {
	return newView(cl, out, errOut, quiet, raw).run(ctx, id)
}
