// gantry prune: remove finished jobs and what they leave on disk and in the
// engine.

package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func pruneCmd(g *globals) *cobra.Command {
	var (
		olderThan, keep string
		dryRun, asJSON  bool
	)
	c := &cobra.Command{
		Use:   "prune",
		Short: "Remove finished jobs: records, logs, contexts, outputs, images; list what went",
		Long: `Prune removes finished jobs that finished more than --older-than ago and are
not among the newest --keep finished jobs of their image name, with their logs,
build contexts, metric series, the kept outputs no other job references, and
the engine images gantry built for them (never one a container or a kept job
uses). It then cuts the engine's build cache down to gantryd's
--build-cache-keep. Jobs not finished, jobs that hold a promoted tag and the
points of sweeps are always kept. Without flags it applies gantryd's own
retention policy (--retain, --retain-per-image) now. Everything removed is
listed; --dry-run lists it and removes nothing.`,
		Example: `  gantry prune --dry-run
  gantry prune --older-than 7d --keep 3`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(c *cobra.Command, _ []string, cl *api.Client) error {
			o := gantry.PruneOptions{DryRun: dryRun}
			if olderThan != "" {
				d, err := gantry.ParseAge(olderThan)
				if err != nil {
					return fmt.Errorf("--older-than: %w", err)
				}
				gd := gantry.Duration(d)
				o.OlderThan = &gd
			}
			if keep != "" {
				var n int
				if _, err := fmt.Sscan(keep, &n); err != nil || n < 0 {
					return gantry.Errorf(gantry.ErrInvalid, "--keep %q: want a number, 0 or more", keep)
				}
				o.Keep = &n
			}
			rep, err := cl.Prune(c.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), rep)
			}
			return writePrune(c.OutOrStdout(), rep)
		}),
	}
	c.Flags().StringVar(&olderThan, "older-than", "", "remove only jobs that finished more than this long ago, e.g. 30d, 12h, 0 for any (default: gantryd's --retain)")
	c.Flags().StringVar(&keep, "keep", "", "keep the newest N finished jobs of each image name (default: gantryd's --retain-per-image)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, and remove nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

// writePrune writes what a prune removed: a line per job, file and image,
// then the totals.
func writePrune(w io.Writer, r *gantry.PruneReport) error {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	for _, j := range r.Jobs {
		when := "-"
		if j.Finished != nil {
			when = j.Finished.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "%s job %s  %s  %s  finished %s\n", verb, j.ID, orDash(j.Name), j.State, when)
	}
	for _, im := range r.Images {
		fmt.Fprintf(w, "%s image %s  %.19s  %s\n", verb, im.Ref, im.ID, gantry.HumanBytes(im.Bytes))
	}
	for _, f := range r.Files {
		fmt.Fprintf(w, "%s file %s  %s\n", verb, f.Path, gantry.HumanBytes(f.Bytes))
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "not removed: %s\n", p)
	}
	if r.BuildCache > 0 {
		fmt.Fprintf(w, "build cache: %s freed\n", gantry.HumanBytes(r.BuildCache))
	}
	_, err := fmt.Fprintf(w, "%s %d jobs, %d images, %d files: %s; kept %d finished jobs (older than %s, keep %d per image)\n",
		verb, len(r.Jobs), len(r.Images), len(r.Files), gantry.HumanBytes(r.Bytes), r.Kept,
		gantry.FormatAge(time.Duration(r.OlderThan)), r.Keep)
	return err
}
