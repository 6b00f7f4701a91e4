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
	"github.com/spf13/pflag"

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
	maxOutput      string
	shmSize        string
	datasets       []string
	cmd            []string         // after --: the training command
	metrics        []string         // --metric NAME=REGEX
	gates          []string         // --gate NAME>=X
	timeouts       [3]time.Duration // build, train, push
	secrets        []string         // --secret id=NAME,src=FILE|env=VAR
}

func submitCmd(g *globals) *cobra.Command {
	var (
		sf          submitFlags
		wait, quiet bool
		raw         bool
	)
	c := &cobra.Command{
		Use:   "submit [OPTIONS] CONTEXT [-- COMMAND [ARG...]]",
		Short: "Submit a job: build CONTEXT, train, gate, push",
		Long: `Submit sends the build context CONTEXT (honouring its .dockerignore) to gantryd
and prints the job ID. With --wait it shows the job's progress and exits with
its outcome: 0 succeeded, 1 failed, 3 rejected by the gate, 4 canceled.
A COMMAND after -- replaces the image's command (CMD) for training, as
docker run does: with an ENTRYPOINT (as gantry init's trainer has), the words
after -- become its arguments.

The training program writes what it produces (the model) to the directory
$GANTRY_OUTPUT_DIR (/output unless --output says otherwise); gantryd keeps it
and, when the job pushes, ships it in the pushed image (--outputs).`,
		Args: submitArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return sendContext(c, g, args, &sf, nil, func(ctx context.Context, cl *api.Client, spec gantry.Spec, secrets map[string]string, tr io.Reader) error {
				j, err := cl.Submit(ctx, spec, secrets, tr)
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
			})
		},
	}
	sf.register(c.Flags())
	f := c.Flags()
	f.BoolVar(&wait, "wait", false, "wait for the job to end, showing its progress")
	f.BoolVarP(&quiet, "quiet", "q", false, "with --wait, show only the outcome")
	f.BoolVar(&raw, "raw", false, "with --wait, write the job's output as it is, control characters and all (no live display)")
	return c
}

// register adds the flags that make a job's spec to f (gantry submit's,
// and gantry sweep's for each of its points).
func (sf *submitFlags) register(f *pflag.FlagSet) {
	f.StringVarP(&sf.dockerfile, "file", "f", "", "Dockerfile path (default: CONTEXT/Dockerfile)")
	f.StringArrayVar(&sf.buildArgs, "build-arg", nil, "build-time variable, KEY=VALUE (repeatable)")
	f.StringVar(&sf.spec.Build.Target, "target", "", "build stage to build")
	f.StringArrayVar(&sf.spec.Push, "push", nil, "push the image to REF when the job passes (repeatable)")
	f.Float64Var(&sf.minAccuracy, "min-accuracy", 0, "gate: push only when the accuracy is at least this (0..1); the same as --gate accuracy>=X")
	f.StringVar(&sf.spec.MetricRegex, "metric-regex", "", "regexp whose first group is the accuracy (default: lines like 'accuracy: 0.97')")
	f.DurationVar(&sf.timeouts[0], "build-timeout", 0, "limit on the build (default: gantryd's)")
	f.DurationVar(&sf.timeouts[1], "train-timeout", 0, "limit on the training (default: gantryd's)")
	f.DurationVar(&sf.timeouts[2], "push-timeout", 0, "limit on the push, retries included (default: gantryd's)")
	f.StringVarP(&sf.memory, "memory", "m", "", "memory limit of the training container, e.g. 2g (default: gantryd's)")
	f.Float64Var(&sf.spec.Resources.CPUs, "cpus", 0, "CPU limit of the training container (default: gantryd's)")
	f.Int64Var(&sf.spec.Resources.PidsLimit, "pids-limit", 0, "process limit of the training container (default: gantryd's)")
	f.StringVar(&sf.maxLog, "max-log", "", "training output kept, e.g. 64m (default: gantryd's)")
	f.StringVar(&sf.spec.Promote, "promote", "", "after the push, move this tag to the image only when its value of the --promote-on metric beats the tag's current image's")
	f.Float64Var(&sf.spec.MinImprovement, "min-improvement", 0, "with --promote, how much better the --promote-on metric must be, in its direction (default 0: strictly better)")
	f.StringVar(&sf.spec.Sandbox.Network, "network", "", "network for the training container, one gantryd's policy allows (default: none; see gantry info)")
	f.StringArrayVar(&sf.spec.Sandbox.CapAdd, "cap-add", nil, "capability the training container keeps, one gantryd's policy allows (default: all dropped; repeatable; see gantry info)")
	f.StringArrayVarP(&sf.spec.Run.Env, "env", "e", nil, "environment variable of the training container, KEY=VALUE (repeatable; recorded)")
	f.StringArrayVar(&sf.spec.Run.SecretEnv, "secret-env", nil, "environment variable of the training container whose value is taken from this shell's environment and sent beside the spec: gantryd keeps it in memory only, until the container is created, and the record names it only (repeatable). The engine keeps a container's environment in its config while the container exists (gantryd removes it when training ends), and docker inspect shows it to whoever may use the engine")
	f.StringArrayVar(&sf.spec.Webhooks, "webhook", nil, "URL told when the job ends, with a JSON job.ended event signed as Standard Webhooks define (repeatable); gantryd's policy bounds where it may point")
	f.StringArrayVar(&sf.datasets, "dataset", nil, "mount data read-only, SRC:DST: SRC a named volume or a host path under a root gantryd allows (repeatable; see gantry info)")
	f.StringVar(&sf.spec.Run.GPUs, "gpus", "", "GPUs for the training container, as docker run --gpus takes them: all, a count, or device=ID[,ID]")
	f.StringArrayVar(&sf.spec.Run.Constraints, "constraint", nil, "place training on the swarm's nodes that match, as docker service create --constraint takes it, e.g. node.labels.pool==train (repeatable; gantryd --backend swarm)")
	f.IntVar(&sf.spec.Run.Retries, "retries", 0, "times training is tried again when the infrastructure loses it (a node goes down); a failure of the program itself is never retried")
	f.StringVar(&sf.shmSize, "shm-size", "", "size of /dev/shm in the training container, e.g. 1g (default: the engine's 64m)")
	f.StringVar(&sf.spec.Outputs.Dir, "output", "", "output directory in the training container, given to it as $GANTRY_OUTPUT_DIR (default /output)")
	f.StringVar(&sf.maxOutput, "max-output", "", "most the output directory may hold, e.g. 1g (default: gantryd's)")
	f.StringVar(&sf.spec.Outputs.Ship, "outputs", "", "how the outputs ship when the job pushes: layer (in the pushed image, at the output directory), artifact (an OCI artifact referring to the image) or none (default layer)")
	f.StringArrayVar(&sf.metrics, "metric", nil, "read metric NAME from the output: NAME=REGEX, the regex's one group is the value, the last match wins (repeatable)")
	f.StringArrayVar(&sf.gates, "gate", nil, "gate: NAME>=X, NAME>X, NAME<=X or NAME<X on a metric's final value; all must hold (repeatable)")
	f.StringArrayVar(&sf.secrets, "secret", nil, "build secret, as buildx takes it: id=NAME,src=FILE or id=NAME,env=VAR; a RUN --mount=type=secret,id=NAME step reads it at /run/secrets/NAME. Its value is sent beside the spec, held in gantryd's memory until the build used it, and in no record, log, image or provenance (repeatable)")
	f.StringVar(&sf.spec.Build.Provenance, "provenance", "", "what the provenance record keeps of the build: max (the default: build arguments with their values, so never pass a secret as --build-arg) or min (build argument names only)")
	f.StringVar(&sf.spec.PromoteOn, "promote-on", "", "with --promote, the metric the champion is chosen by: NAME, NAME:max or NAME:min (default accuracy:max)")
}

// sendContext is what gantry submit and gantry sweep share: the spec from
// the flags sf (and the command after --), the secrets' values, a client,
// and the context in args[0] as a tar, handed to send. check, when not nil,
// checks the command's own flags first; its error, like the spec's, is a
// usage error.
func sendContext(c *cobra.Command, g *globals, args []string, sf *submitFlags, check func() error,
	send func(context.Context, *api.Client, gantry.Spec, map[string]string, io.Reader) error) error {
	dir := args[0]
	if n := c.ArgsLenAtDash(); n >= 0 {
		sf.cmd = args[n:]
	}
	sf.minAccuracySet = c.Flags().Changed("min-accuracy")
	var err error
	if check != nil {
		err = check()
	}
	var (
		spec    gantry.Spec
		secrets map[string]string
	)
	if err == nil {
		spec, secrets, err = specAndSecrets(dir, *sf)
	}
	ctx := c.Context()
	if err == nil {
		ctx, err = buildSecrets(ctx, &spec, sf.secrets, os.LookupEnv) // buildsecrets.go
	}
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
	return send(ctx, cl, spec, secrets, tr)
}

// submitArgs takes the context, and after -- the training command.
func submitArgs(c *cobra.Command, args []string) error {
	n := c.ArgsLenAtDash()
	if n < 0 {
		n = len(args)
	} else if n == len(args) {
		return &exitError{code: exitUsage, msg: "gantry: nothing after --: give the training command, or leave out the --"}
	}
	return exactArgs(1)(c, args[:n])
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
	if spec.Resources.OutputBytes, err = gantry.ParseBytes(f.maxOutput); err != nil {
		return gantry.Spec{}, fmt.Errorf("--max-output: %w", err)
	}
	if spec.Run.ShmSize, err = gantry.ParseBytes(f.shmSize); err != nil {
		return gantry.Spec{}, fmt.Errorf("--shm-size: %w", err)
	}
	for _, d := range f.datasets {
		src, dst, ok := strings.Cut(d, ":")
		if !ok || src == "" || dst == "" {
			return gantry.Spec{}, fmt.Errorf("--dataset %q: want SRC:DST, like /srv/data/iris:/data or myvolume:/data", d)
		}
		spec.Run.Datasets = append(spec.Run.Datasets, gantry.Dataset{Source: src, Target: dst})
	}
	spec.Run.Cmd = f.cmd
	for _, m := range f.metrics {
		name, re, ok := strings.Cut(m, "=")
		if !ok || name == "" || re == "" {
			return gantry.Spec{}, fmt.Errorf("--metric %q: want NAME=REGEX, like 'loss=loss: ([0-9.]+)'", m)
		}
		spec.Metrics = append(spec.Metrics, gantry.MetricPattern{Name: name, Regex: re})
	}
	for _, g := range f.gates {
		c, err := gantry.ParseCondition(g)
		if err != nil {
			return gantry.Spec{}, fmt.Errorf("--gate: %w", err)
		}
		spec.Gates = append(spec.Gates, c)
	}
	spec.Timeouts = gantry.Timeouts{
		Build: gantry.Duration(f.timeouts[0]), Train: gantry.Duration(f.timeouts[1]), Push: gantry.Duration(f.timeouts[2]),
	}
	return spec, nil
}

// specAndSecrets is buildSpec, and the values of the variables its
// --secret-env names, from this shell's environment.
func specAndSecrets(dir string, f submitFlags) (gantry.Spec, map[string]string, error) {
	spec, err := buildSpec(dir, f)
	if err != nil {
		return spec, nil, err
	}
	secrets, err := secretValues(spec.Run.SecretEnv, os.LookupEnv)
	return spec, secrets, err
}

// secretValues takes the value of each variable --secret-env names from
// this shell's environment (lookup). It says which one is not set.
func secretValues(names []string, lookup func(string) (string, bool)) (map[string]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	vals := make(map[string]string, len(names))
	for _, k := range names {
		v, ok := lookup(k)
		if !ok {
			return nil, fmt.Errorf("--secret-env %s: %s is not set in this shell's environment", k, k)
		}
		vals[k] = v
	}
	return vals, nil
}

// waitJob shows the job until it ends, as gantry watch does (with quiet,
// nothing), then prints its outcome to out and returns the exit code it
// calls for.
func waitJob(ctx context.Context, cl *api.Client, id string, out, errOut io.Writer, quiet, raw bool) error {
	return newView(cl, out, errOut, quiet, raw).run(ctx, id)
}
