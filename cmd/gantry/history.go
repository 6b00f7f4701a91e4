// gantry history (the jobs that pushed to a name) and gantry diff (what
// differed between two jobs).

package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func historyCmd(g *globals) *cobra.Command {
	var (
		tag    string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "history NAME",
		Short: "The jobs that pushed to an image name (REGISTRY/REPO), newest first, and which holds the tag",
		Args:  exactArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			h, err := cl.History(c.Context(), args[0], tag)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), h)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 0, 3, ' ', 0)
			header, result := "ACCURACY", accuracyText
			if slices.ContainsFunc(h, func(e gantry.HistoryEntry) bool { return e.Metric != "" }) {
				header, result = "PROMOTED ON", objectiveText
			}
			fmt.Fprintf(tw, "JOB ID\tCREATED\tSTATE\t%s\tDIGEST\t%s\tWHY\n", header, tagHeader(tag))
			for _, e := range h {
				acc, digest, champ := result(e), "-", ""
				if e.Digest != "" {
					digest = e.Digest[:min(len(e.Digest), 19)]
				}
				if e.Champion {
					champ = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Job, e.Created.Local().Format(time.DateTime), e.State, acc, digest, champ, e.Reason)
			}
			return tw.Flush()
		}),
	}
	c.Flags().StringVar(&tag, "tag", "champion", "the tag whose holder is marked")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func tagHeader(tag string) string { return "HOLDS " + tag }

// accuracyText is a history entry's accuracy, "-" when it has none.
func accuracyText(e gantry.HistoryEntry) string {
	if e.Accuracy == nil {
		return "-"
	}
	return gantry.FormatValue(*e.Accuracy)
}

// objectiveText is the metric a history entry's job promoted on, and its
// value: "loss=0.2100", "accuracy=0.9500", "loss=-" when it reported none.
func objectiveText(e gantry.HistoryEntry) string {
	if e.Metric == "" {
		return gantry.DefaultObjective.Metric + "=" + accuracyText(e)
	}
	if e.Value == nil {
		return e.Metric + "=-"
	}
	return e.Metric + "=" + gantry.FormatValue(*e.Value)
}

func diffCmd(g *globals) *cobra.Command {
	var raw bool
	c := &cobra.Command{
		Use:   "diff JOB1 JOB2",
		Short: "What differed between two jobs' inputs (context files, build args, base images) and results",
		Args:  exactArgs(2),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			jobs, err := getJobs(c.Context(), cl, args)
			if err != nil {
				return err
			}
			diffJobs(c.OutOrStdout(), jobs[0], jobs[1], shown(c.OutOrStdout(), raw))
			return nil
		}),
	}
	c.Flags().BoolVar(&raw, "raw", false, "write the jobs' values as they are, control characters and all (they are escaped on a terminal)")
	return c
}

// diffJobs writes what differs between a and b, one line each, "-" for a's
// side and "+" for b's; "no differences" when nothing does. Each line goes
// through text (see shown): the values come from the jobs.
func diffJobs(w io.Writer, a, b *gantry.Job, text func(string) string) {
	n := 0
	line := func(format string, args ...any) {
		fmt.Fprintln(w, text(fmt.Sprintf(format, args...)))
		n++
	}
	fmt.Fprintf(w, "%s\n%s\n", text("--- "+a.ID), text("+++ "+b.ID))
	// Inputs.
	for _, f := range unionKeys(a.Inputs.Files, b.Inputs.Files) {
		da, db := a.Inputs.Files[f], b.Inputs.Files[f]
		switch {
		case da == db:
		case da == "":
			line("context: + %s", f)
		case db == "":
			line("context: - %s", f)
		default:
			line("context: ~ %s (%s -> %s)", f, short(da), short(db))
		}
	}
	if a.Inputs.Files == nil || b.Inputs.Files == nil {
		if a.Inputs.ContextDigest != b.Inputs.ContextDigest {
			line("context digest: %s -> %s", short(a.Inputs.ContextDigest), short(b.Inputs.ContextDigest))
		}
	}
	if a.Spec.Build.Dockerfile != b.Spec.Build.Dockerfile {
		line("dockerfile: %s -> %s", a.Spec.Build.Dockerfile, b.Spec.Build.Dockerfile)
	}
	for _, k := range unionKeys(a.Spec.Build.BuildArgs, b.Spec.Build.BuildArgs) {
		va, oka := a.Spec.Build.BuildArgs[k]
		vb, okb := b.Spec.Build.BuildArgs[k]
		switch {
		case oka && okb && va == vb:
		case !oka:
			line("build arg: + %s=%s", k, vb)
		case !okb:
			line("build arg: - %s=%s", k, va)
		default:
			line("build arg: ~ %s: %s -> %s", k, va, vb)
		}
	}
	if a.Spec.Build.Target != b.Spec.Build.Target {
		line("target: %q -> %q", a.Spec.Build.Target, b.Spec.Build.Target)
	}
	bases := func(j *gantry.Job) map[string]string {
		m := map[string]string{}
		for _, b := range j.Inputs.Bases {
			m[b.Ref] = b.Digest
		}
		return m
	}
	ba, bb := bases(a), bases(b)
	for _, r := range unionKeys(ba, bb) {
		if ba[r] != bb[r] {
			line("base: %s: %s -> %s", r, orNone(short(ba[r])), orNone(short(bb[r])))
		}
	}
	diffRun(line, a, b)
	// Results.
	if a.Image != b.Image {
		line("image: %s -> %s", short(a.Image), short(b.Image))
	}
	if fa, fb := accText(a), accText(b); fa != fb {
		line("accuracy: %s -> %s", fa, fb)
	}
	if a.State != b.State {
		line("state: %s -> %s", a.State, b.State)
	}
	if ea, eb := exitText(a), exitText(b); ea != eb {
		line("exit code: %s -> %s", ea, eb)
	}
	if n == 0 {
		fmt.Fprintln(w, "no differences")
	}
}

func unionKeys[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func accText(j *gantry.Job) string {
	if j.Metrics.Accuracy == nil {
		return "(none)"
	}
	return strconv.FormatFloat(*j.Metrics.Accuracy, 'f', 4, 64)
}

func exitText(j *gantry.Job) string {
	if j.ExitCode == nil {
		return "(none)"
	}
	return strconv.Itoa(*j.ExitCode)
}
