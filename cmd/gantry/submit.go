// gantry submit: the job's spec from the flags, the context sent, and with
// --wait the job's view until it ends.

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

// submitFlags are the flags of gantry submit that make the job's spec: the
// spec's own fields are set in place, the rest are read by buildSpec.
type submitFlags struct {
	spec           gantry.Spec
	dockerfile     string
	buildArgs      []string
	minAccuracy    float64
	minAccuracySet bool // --min-accuracy was given: 0 is a gate too
	memory         string
	maxLog         string
	timeouts       [3]time.Duration // build, train, push
}

func submitCmd(g *globals) *cobra.Command {
	var (
		sf          submitFlags
		wait, quiet bool
		raw         bool
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
			sf.minAccuracySet = c.Flags().Changed("min-accuracy")
			spec, err := buildSpec(dir, sf)
			if err != nil {
				return &exitError{code: exitUsage, msg: "gantry: " + err.Error()}
			}
			cl, err := g.client()
			if err != nil {
				return err
			}
			tr, err := tarContext(dir, spec.Build.Dockerfile)
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
	f.StringVarP(&sf.dockerfile, "file", "f", "", "Dockerfile path (default: CONTEXT/Dockerfile)")
	f.StringArrayVar(&sf.buildArgs, "build-arg", nil, "build-time variable, KEY=VALUE (repeatable)")
	f.StringVar(&sf.spec.Build.Target, "target", "", "build stage to build")
	f.StringArrayVar(&sf.spec.Push, "push", nil, "push the image to REF when the job passes (repeatable)")
	f.Float64Var(&sf.minAccuracy, "min-accuracy", 0, "gate: push only when the accuracy is at least this (0..1)")
	f.StringVar(&sf.spec.MetricRegex, "metric-regex", "", "regexp whose first group is the accuracy (default: lines like 'accuracy: 0.97')")
	f.DurationVar(&sf.timeouts[0], "build-timeout", 0, "limit on the build (default: gantryd's)")
	f.DurationVar(&sf.timeouts[1], "train-timeout", 0, "limit on the training (default: gantryd's)")
	f.DurationVar(&sf.timeouts[2], "push-timeout", 0, "limit on the push, retries included (default: gantryd's)")
	f.StringVarP(&sf.memory, "memory", "m", "", "memory limit of the training container, e.g. 2g (default: gantryd's)")
	f.Float64Var(&sf.spec.Resources.CPUs, "cpus", 0, "CPU limit of the training container (default: gantryd's)")
	f.Int64Var(&sf.spec.Resources.PidsLimit, "pids-limit", 0, "process limit of the training container (default: gantryd's)")
	f.StringVar(&sf.maxLog, "max-log", "", "training output kept, e.g. 64m (default: gantryd's)")
	f.StringVar(&sf.spec.Promote, "promote", "", "after the push, move this tag to the image only when its accuracy beats the tag's current image")
	f.Float64Var(&sf.spec.MinImprovement, "min-improvement", 0, "with --promote, how much better the accuracy must be (default 0: strictly better)")
	f.StringVar(&sf.spec.Sandbox.Network, "network", "", "network for the training container, one gantryd's policy allows (default: none; see gantry info)")
	f.StringArrayVar(&sf.spec.Sandbox.CapAdd, "cap-add", nil, "capability the training container keeps, one gantryd's policy allows (default: all dropped; repeatable; see gantry info)")
	f.BoolVar(&wait, "wait", false, "wait for the job to end, showing its progress")
	f.BoolVarP(&quiet, "quiet", "q", false, "with --wait, show only the outcome")
	f.BoolVar(&raw, "raw", false, "with --wait, write the job's output as it is, control characters and all (no live display)")
	return c
}

// buildSpec is the spec of a job built from the context dir with the flags
// f. Its errors are the user's to fix, worded for the flag at fault (a size
// that does not parse is of kind ErrInvalid).
func buildSpec(dir string, f submitFlags) (gantry.Spec, error) {
	spec := f.spec
	rel, err := dockerfileInContext(dir, f.dockerfile)
	if err != nil {
		return gantry.Spec{}, err
	}
	spec.Build.Dockerfile = rel
	spec.Build.BuildArgs = map[string]string{}
	for _, kv := range f.buildArgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok { // like docker build: take the value from the environment
			v, ok = os.LookupEnv(k)
			if !ok {
				continue
			}
		}
		spec.Build.BuildArgs[k] = v
	}
	if f.minAccuracySet {
		a := f.minAccuracy
		spec.MinAccuracy = &a
	}
	if spec.Resources.Memory, err = gantry.ParseBytes(f.memory); err != nil {
		return gantry.Spec{}, fmt.Errorf("--memory: %w", err)
	}
	if spec.Resources.LogBytes, err = gantry.ParseBytes(f.maxLog); err != nil {
		return gantry.Spec{}, fmt.Errorf("--max-log: %w", err)
	}
	spec.Timeouts = gantry.Timeouts{
		Build: gantry.Duration(f.timeouts[0]), Train: gantry.Duration(f.timeouts[1]), Push: gantry.Duration(f.timeouts[2]),
	}
	return spec, nil
}

// waitJob shows the job until it ends, as gantry watch does (with quiet,
// nothing), then prints its outcome to out and returns the exit code it
// calls for.
func waitJob(ctx context.Context, cl *api.Client, id string, out, errOut io.Writer, quiet, raw bool) error {
	return newView(cl, out, errOut, quiet, raw).run(ctx, id)
}
