// gantry sweep: a grid of jobs over one spec, built once; only the best
// point that passes ships. And its ls, show and cancel.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func sweepCmd(g *globals) *cobra.Command {
	var (
		sf     submitFlags
		params []string
		wait   bool
	)
	c := &cobra.Command{
		Use:   "sweep [OPTIONS] CONTEXT --param NAME=V1,V2,... [--param ...] [-- COMMAND [ARG...]]",
		Short: "Run a grid of jobs built once; push only the best that passes",
		Long: `Sweep runs one job per point of the grid the --param flags make (every
combination of their values), each given its parameters as environment
variables. The image is built once for the whole sweep; the points run in
parallel within gantryd's --max-jobs. Once every point has ended, the best
point that passed its gates, by --promote-on (default accuracy:max), is the
winner: with --push it alone is pushed (and --promote applies to it); the
others push nothing. Every other flag is gantry submit's, for each point.

With --wait it waits for the whole sweep, prints the leaderboard and exits:
0 a winner was chosen (and pushed), 3 no point passed, 1 failed, 4 canceled.`,
		Args: submitArgs,
		RunE: func(c *cobra.Command, args []string) error {
			var ps []gantry.Param
			check := func() (err error) {
				ps, err = parseParams(params)
				if err == nil && len(ps) == 0 {
					err = errors.New("give at least one --param NAME=V1,V2,...")
				}
				return err
			}
			return sendContext(c, g, args, &sf, check, func(ctx context.Context, cl *api.Client, spec gantry.Spec, secrets map[string]string, tr io.Reader) error {
				sw, err := cl.SubmitSweep(ctx, gantry.SweepSpec{Job: spec, Params: ps}, secrets, tr)
				if err != nil {
					return err
				}
				if !wait {
					fmt.Fprintln(c.OutOrStdout(), sw.ID)
					return nil
				}
				fmt.Fprintf(c.ErrOrStderr(), "sweep %s submitted: %d points\n", sw.ID, len(sw.Jobs))
				return waitSweep(ctx, cl, sw.ID, c.OutOrStdout(), c.ErrOrStderr())
			})
		},
	}
	sf.register(c.Flags())
	c.Flags().StringArrayVar(&params, "param", nil, "a parameter and its values, NAME=V1,V2,...: each point gets NAME in its environment (repeatable: the grid is every combination)")
	c.Flags().BoolVar(&wait, "wait", false, "wait for the whole sweep, then print its leaderboard")
	c.AddCommand(sweepLsCmd(g), sweepShowCmd(g), sweepCancelCmd(g))
	return c
}

// parseParams reads --param flags: NAME=V1,V2,... each.
func parseParams(flags []string) ([]gantry.Param, error) {
	var ps []gantry.Param
	for _, f := range flags {
		name, vals, ok := strings.Cut(f, "=")
		if !ok || name == "" || vals == "" {
			return nil, fmt.Errorf("--param %q: want NAME=V1,V2,..., like LR=0.1,0.01", f)
		}
		p := gantry.Param{Name: name, Values: strings.Split(vals, ",")}
		if slices.Contains(p.Values, "") {
			return nil, fmt.Errorf("--param %q: a value is empty; separate values with single commas", f)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// sweepSource is what waitSweep reads; *api.Client is one.
type sweepSource interface {
	ListSweeps(ctx context.Context, limit int) (api.SweepList, error)
	GetSweep(ctx context.Context, id string) (*gantry.SweepView, error)
	Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error
}

// waitSweep waits for sweep id to end, woken by the event stream, saying on
// errOut how each point ends, then prints the leaderboard to out and
// returns the exit code the sweep's state calls for.
func waitSweep(ctx context.Context, src sweepSource, id string, out, errOut io.Writer) error {
	l, err := src.ListSweeps(ctx, 1) // the event number to follow from
	if err != nil {
		return err
	}
	v, err := src.GetSweep(ctx, id)
	if err != nil {
		return err
	}
	points := map[string]bool{}
	for _, j := range v.Sweep.Jobs {
		points[j] = true
	}
	ectx, stop := context.WithCancel(ctx)
	woken := make(chan struct{}, 1)
	done := make(chan error, 1)
	ended := false
	defer func() { // the stream's goroutine writes to errOut: it ends first
		stop()
		if !ended {
			<-done
		}
	}()
	go func() {
		done <- src.Events(ectx, l.EventSeq, "", true, func(e gantry.Event) error {
			if e.Sweep != id && !points[e.Job] {
				return nil
			}
			if e.Type == gantry.EventState && e.State.Terminal() {
				fmt.Fprintf(errOut, "point %s %s\n", e.Job, e.State)
			}
			select {
			case woken <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	for !v.Sweep.State.Terminal() {
		select {
		case <-woken:
		case err := <-done:
			ended = true
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow sweep %s: the event stream ended: %v", id, err)
		}
		if v, err = src.GetSweep(ctx, id); err != nil {
			return err
		}
	}
	printLeaderboard(out, v)
	return exitFor(v.Sweep.State)
}

// printLeaderboard writes sweep v's outcome and its points, ranked: rank,
// job, each parameter, the objective's metric, the other finals, the
// verdict; the winner marked with a '*'.
func printLeaderboard(w io.Writer, v *gantry.SweepView) {
	sw := v.Sweep
	head := fmt.Sprintf("sweep %s %s", sw.ID, sw.State)
	if sw.Winner != "" {
		head += ": winner " + sw.Winner
	}
	if sw.Error != "" {
		head += ": " + sw.Error
	}
	fmt.Fprintln(w, head)
	obj, _ := gantry.ParseObjective(strings.TrimSpace(v.Objective))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cols := []string{"", "RANK", "JOB"}
	for _, p := range sw.Spec.Params {
		cols = append(cols, p.Name)
	}
	cols = append(cols, strings.ToUpper(obj.String()), "OTHER METRICS", "VERDICT")
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for i, p := range v.Points {
		mark := ""
		if p.Job == sw.Winner {
			mark = "*"
		}
		row := []string{mark, strconv.Itoa(i + 1), p.Job}
		for _, par := range sw.Spec.Params {
			row = append(row, p.Params[par.Name])
		}
		row = append(row, metricText(p.Metrics, obj.Metric), otherMetrics(p.Metrics, obj.Metric), verdict(p))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

func metricText(m gantry.Metrics, name string) string {
	if v, ok := m.Value(name); ok {
		return strconv.FormatFloat(v, 'f', 4, 64)
	}
	return "-"
}

// otherMetrics lists the finals other than the objective's, by name.
func otherMetrics(m gantry.Metrics, skip string) string {
	vals := map[string]float64{}
	for k, v := range m.Values {
		vals[k] = v
	}
	if a, ok := m.Value("accuracy"); ok {
		vals["accuracy"] = a
	}
	delete(vals, skip)
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, k+"="+strconv.FormatFloat(vals[k], 'g', 4, 64))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// verdict is how a point ended, in a few words.
func verdict(p gantry.SweepPoint) string {
	if p.Passed {
		return "passed"
	}
	s := string(p.State)
	if p.Error != "" {
		e, _, _ := strings.Cut(p.Error, "\n")
		if len(e) > 60 {
			e = e[:57] + "..."
		}
		s += ": " + e
	}
	return s
}

func sweepLsCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls",
		Short: "List sweeps, newest first",
		Args:  exactArgs(0),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			l, err := cl.ListSweeps(c.Context(), 0)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), l.Sweeps)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "SWEEP ID\tSTATE\tPOINTS\tWINNER\tCREATED")
			for _, sw := range l.Sweeps {
				win := sw.Winner
				if win == "" {
					win = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s ago\n", sw.ID, sw.State, len(sw.Jobs), win, human(time.Since(sw.Created)))
			}
			return tw.Flush()
		}),
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the sweeps as JSON")
	return c
}

func sweepShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show SWEEP",
		Short: "Show a sweep's leaderboard: parameters, metrics, verdict, the winner",
		Args:  exactArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			v, err := cl.GetSweep(c.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), v)
			}
			printLeaderboard(c.OutOrStdout(), v)
			return nil
		}),
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the sweep and its leaderboard as JSON")
	return c
}

func sweepCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel SWEEP",
		Short: "Cancel a sweep: its unfinished points are canceled, nothing is pushed",
		Args:  exactArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			sw, err := cl.CancelSweep(c.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "sweep %s %s\n", sw.ID, sw.State)
			return nil
		}),
	}
}
