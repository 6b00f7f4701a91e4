// gantry metrics: a job's metric series, as a table of steps or as JSON.

package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func metricsCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "metrics JOB [NAME]",
		Short: "Print a job's metric series: a row per step, a column per metric",
		Long: `Metrics prints the series of the metrics a job reported (its accuracy, its
--metric patterns, and the structured lines its program printed; see
'gantry init''s gantry_metrics.py): a row per step, a column per metric, or only
NAME's. A series keeps at most ` + strconv.Itoa(gantry.MaxSeriesPoints) + ` points, evenly spread over all that
were reported, and always the last. While the job trains, it shows the points
so far. 'gantry inspect' shows the final values.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return &exitError{code: exitUsage, msg: fmt.Sprintf("gantry: %q requires a job and at most one metric name\nUsage: %s", c.CommandPath(), c.UseLine())}
			}
			return nil
		},
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			s, err := cl.Metrics(c.Context(), args[0], name)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), s)
			}
			if len(s) == 0 {
				if name != "" {
					return gantry.Errorf(gantry.ErrNotFound, "job %s has reported no metric %s (yet); 'gantry metrics %s' lists those it has", args[0], name, args[0])
				}
				fmt.Fprintf(c.ErrOrStderr(), "job %s has reported no metrics (yet)\n", args[0])
				return nil
			}
			return writeSeries(c.OutOrStdout(), s)
		}),
	}
	c.Flags().BoolVar(&asJSON, "json", false, `print the series as JSON: {"NAME": [{"step": S, "value": V}, ...]}`)
	return c
}

// writeSeries writes s as a table: STEP, then a column per metric in the
// order of their names; a row per step that any metric reported, in order
// ("-" where a metric has no point there). A step that a metric reported
// more than once takes as many rows.
func writeSeries(w io.Writer, s gantry.Series) error {
	names := slices.Sorted(maps.Keys(s))
	// at[name][step] are name's values at step, in the order reported.
	at := make(map[string]map[int64][]float64, len(names))
	var steps []int64
	for _, name := range names {
		at[name] = map[int64][]float64{}
		for _, p := range s[name] {
			at[name][p.Step] = append(at[name][p.Step], p.Value)
			steps = append(steps, p.Step)
		}
	}
	slices.Sort(steps)
	steps = slices.Compact(steps)

	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprint(tw, "STEP")
	for _, name := range names {
		fmt.Fprintf(tw, "\t%s", name)
	}
	fmt.Fprintln(tw)
	for _, step := range steps {
		rows := 0
		for _, name := range names {
			rows = max(rows, len(at[name][step]))
		}
		for i := 0; i < rows; i++ {
			fmt.Fprint(tw, step)
			for _, name := range names {
				cell := "-"
				if vs := at[name][step]; i < len(vs) {
					cell = strconv.FormatFloat(vs[i], 'g', 6, 64)
				}
				fmt.Fprintf(tw, "\t%s", cell)
			}
			fmt.Fprintln(tw)
		}
	}
	return tw.Flush()
}
