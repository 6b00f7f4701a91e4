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
	"syscall"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
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

// exitFor is the exit code a job's final state calls for.
func exitFor(s gantry.State) error {
	switch s {
	case gantry.StateSucceeded:
		return nil
	case gantry.StateRejected:
		return &exitError{code: exitRejected}
	case gantry.StateCanceled:
		return &exitError{code: exitCanceled}
	}
	return &exitError{code: exitFailed}
}

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

// withClient is a command's RunE that makes the client of gantryd, then
// runs run with it.
func (g *globals) withClient(run func(c *cobra.Command, args []string, cl *api.Client) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		cl, err := g.client()
		if err != nil {
			return err
		}
		return run(c, args, cl)
	}
}

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
	root.AddCommand(initCmd(), submitCmd(g), lsCmd(g), inspectCmd(g), logsCmd(g), watchCmd(g), cancelCmd(g), pushCmd(g), historyCmd(g), diffCmd(g), versionCmd(g), infoCmd(g), outputsCmd(g))
	root.AddCommand(metricsCmd(g))
	root.AddCommand(nodesCmd(g))
	root.AddCommand(sweepCmd(g))
	root.AddCommand(pruneCmd(g))
	return root
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return &exitError{code: exitUsage, msg: fmt.Sprintf("gantry: %q requires exactly %d argument(s)\nUsage: %s", c.CommandPath(), n, c.UseLine())}
		}
		return nil
	}
}

// outcome is the one line that says how a job ended.
func outcome(j *gantry.Job) string {
	s := fmt.Sprintf("job %s %s", j.ID, j.State)
	if j.Metrics.Accuracy != nil {
		s += fmt.Sprintf(": accuracy %.4f", *j.Metrics.Accuracy)
	}
	s += gatedMetrics(j)
	if j.Error != "" {
		s += ": " + j.Error
	}
	return s
}

// jobGetter reads a job's record; *api.Client is one.
type jobGetter interface {
	Get(ctx context.Context, id string) (*gantry.Job, error)
}

// getJobs reads the records of the jobs ids, in their order. The first
// that cannot be read ends it (ErrNotFound for a job gantryd does not know).
func getJobs(ctx context.Context, src jobGetter, ids []string) ([]*gantry.Job, error) {
	jobs := make([]*gantry.Job, 0, len(ids))
	for _, id := range ids {
		j, err := src.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// jobEnds is where waitEnd learns of a job's end; *api.Client is one.
type jobEnds interface {
	jobGetter
	Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error
}

// waitEnd returns job id's record once the job has ended; ctx's error when
// ctx ends first. It is woken by the end itself: it follows the job's
// events, a stream gantryd ends after the job's terminal state, and reads
// the record again when the stream ends. A stream that ends early (gantryd
// stopping) is joined again when the record says the job goes on; one that
// breaks is an error.
func waitEnd(ctx context.Context, src jobEnds, id string) (*gantry.Job, error) {
	for {
		j, err := src.Get(ctx, id)
		if err != nil || j.State.Terminal() {
			return j, err
		}
		err = src.Events(ctx, 0, id, true, func(gantry.Event) error { return nil })
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, err
		}
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// gatedMetrics names, for outcome, the other metrics than accuracy that
// job j's gates judged, with the values it reported (", loss 0.2100").
func gatedMetrics(j *gantry.Job) string {
	s, seen := "", map[string]bool{"accuracy": true}
	for _, c := range j.Spec.Conditions() {
		if seen[c.Metric] {
			continue
		}
		seen[c.Metric] = true
		if v, ok := j.Metrics.Value(c.Metric); ok {
			s += fmt.Sprintf(", %s %s", c.Metric, gantry.FormatValue(v))
		}
	}
	if j.Metrics.Accuracy == nil && s != "" {
		s = ":" + s[1:]
	}
	return s
}
