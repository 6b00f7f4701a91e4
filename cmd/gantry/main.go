// Command gantry is the client of gantryd: it writes the reference trainer,
// submits jobs and shows them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
	"github.com/gantry-ml/gantry/trainer"
)

// Exit codes: a script can tell a rejected model from a broken job.
const (
	exitFailed   = 1 // an error, or the job failed
	exitUsage    = 2
	exitRejected = 3 // trained, but the gate refused the model
	exitCanceled = 4
)

// exitError carries an exit code out of a command.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "gantry:", err)
	os.Exit(exitFailed)
}

type globals struct {
	host string
	tls  api.TLSFiles
}

func (g *globals) client() (*api.Client, error) { return api.NewClient(g.host, g.tls) }

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "gantry",
		Short: "Build, train, gate and push a model image, as one recorded job",
		Long: `gantry talks to gantryd, which builds a training image with BuildKit, runs it on
the Docker engine, reads the accuracy it prints, and pushes the image only when
the job passes its gate.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, msg: fmt.Sprintf("gantry: %v\nSee '%s --help'.", err, c.CommandPath())}
	})
	root.PersistentFlags().StringVarP(&g.host, "host", "H", "", "gantryd: unix:///path, or tcp://HOST:PORT with the TLS flags (default: GANTRY_HOST, else "+api.DefaultSocket()+")")
	root.PersistentFlags().StringVar(&g.tls.CA, "tlscacert", "", "trust only certificates signed by this CA (tcp:// hosts)")
	root.PersistentFlags().StringVar(&g.tls.Cert, "tlscert", "", "TLS client certificate (tcp:// hosts)")
	root.PersistentFlags().StringVar(&g.tls.Key, "tlskey", "", "TLS client key (tcp:// hosts)")
	root.AddCommand(initCmd(), submitCmd(g), lsCmd(g), inspectCmd(g), logsCmd(g), watchCmd(g), cancelCmd(g), pushCmd(g), historyCmd(g), diffCmd(g), versionCmd(g), infoCmd(g))
	return root
}

func initCmd() *cobra.Command {
	var base string
	c := &cobra.Command{
		Use:   "init DIR",
		Short: "Write the reference Iris trainer (app.py, requirements.txt, Dockerfile) into DIR",
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

func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return &exitError{code: exitUsage, msg: fmt.Sprintf("gantry: %q requires exactly %d argument(s)\nUsage: %s", c.CommandPath(), n, c.UseLine())}
		}
		return nil
	}
}

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

// outcome is the one line that says how a job ended.
func outcome(j *gantry.Job) string {
	s := fmt.Sprintf("job %s %s", j.ID, j.State)
	if j.Metrics.Accuracy != nil {
		s += fmt.Sprintf(": accuracy %.4f", *j.Metrics.Accuracy)
	}
	if j.Error != "" {
		s += ": " + j.Error
	}
	return s
}

func lsCmd(g *globals) *cobra.Command {
	var (
		asJSON bool
		limit  int
		states []string
	)
	c := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list", "ps"},
		Short:   "List jobs, newest first",
		Args:    exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			o := gantry.JobFilter{Limit: limit}
			for _, s := range states {
				o.States = append(o.States, gantry.State(s))
			}
			jobs, _, err := cl.List(c.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), jobs)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "JOB ID\tSTATE\tACCURACY\tPUSHED\tCREATED\tDURATION")
			now := time.Now()
			for _, j := range jobs {
				acc := "-"
				if j.Metrics.Accuracy != nil {
					acc = strconv.FormatFloat(*j.Metrics.Accuracy, 'f', 4, 64)
				}
				pushed := "-"
				if len(j.Pushes) > 0 {
					pushed = j.Pushes[0].Ref
					if len(j.Pushes) > 1 {
						pushed += fmt.Sprintf(" (+%d)", len(j.Pushes)-1)
					}
				}
				end := now
				if j.Times.Finished != nil {
					end = *j.Times.Finished
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s\n", j.ID, j.State, acc, pushed,
					human(now.Sub(j.Times.Created)), human(end.Sub(j.Times.Created)))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON")
	c.Flags().IntVarP(&limit, "limit", "n", 50, "show at most this many jobs")
	c.Flags().StringArrayVar(&states, "state", nil, "show only jobs in this state (repeatable)")
	return c
}

func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func inspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect JOB [JOB...]",
		Short: "Print jobs' records as JSON",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			var jobs []*gantry.Job
			for _, id := range args {
				j, err := cl.Get(c.Context(), id)
				if err != nil {
					return err
				}
				jobs = append(jobs, j)
			}
			if len(jobs) == 1 {
				return writeJSON(c.OutOrStdout(), jobs[0])
			}
			return writeJSON(c.OutOrStdout(), jobs)
		},
	}
}

func logsCmd(g *globals) *cobra.Command {
	var follow, raw bool
	c := &cobra.Command{
		Use:   "logs [-f] [--raw] JOB",
		Short: "Print a job's log: the build, the training output and the push",
		Long: `Logs prints a job's log. On a terminal, what the build and the training program
printed is shown with control characters escaped (\x1b, \x07, \u009b, ...), and
gantryd's own lines are dimmed; --raw writes the log's bytes as they are.`,
		Args: exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			lw := newLogWriter(c.OutOrStdout(), logModeFor(c.OutOrStdout(), raw))
			if err := cl.Logs(c.Context(), args[0], follow, lw); err != nil {
				return err
			}
			return lw.Close()
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the job ends")
	c.Flags().BoolVar(&raw, "raw", false, "write the log as it is stored, control characters and all")
	return c
}

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

func pushCmd(g *globals) *cobra.Command {
	var (
		to    []string
		quiet bool
	)
	c := &cobra.Command{
		Use:   "push JOB [--to REF]...",
		Short: "Push a finished job's image again, to its own references or to --to",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
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
		},
	}
	c.Flags().StringArrayVar(&to, "to", nil, "push to this reference instead of the job's own (repeatable)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the pushed references, no progress")
	return c
}

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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
