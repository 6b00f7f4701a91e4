package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func infoCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info",
		Short: "Show gantryd's versions and its policy: what a job may ask",
		Args:  exactArgs(0),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			info, err := cl.Info(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), info)
			}
			writeInfo(c.OutOrStdout(), info)
			return nil
		}),
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return c
}

// writeInfo prints the policy the way a user reads it: each ceiling with
// the gantryd flag that sets it.
func writeInfo(w io.Writer, info api.Info) {
	v, p := info.Version, info.Policy
	fmt.Fprintf(w, "gantryd: %s (API %s)\nengine:  %s (API %s)\n\n", v.Version, v.APIVersion, v.Engine, v.EngineAPI)
	fmt.Fprintln(w, "Policy (what a job may ask; a job that asks nothing gets the ceiling):")
	size := func(n int64) string {
		if n == 0 {
			return "no ceiling"
		}
		return gantry.FormatBytes(n)
	}
	dur := func(d gantry.Duration) string {
		if d == 0 {
			return "no ceiling"
		}
		return time.Duration(d).String()
	}
	num := func(f float64) string {
		if f == 0 {
			return "no ceiling"
		}
		return fmt.Sprintf("%g", f)
	}
	list := func(l []string) string {
		if len(l) == 0 {
			return "none"
		}
		return strings.Join(l, ", ")
	}
	rows := [][2]string{
		{"memory (--memory)", size(p.Resources.Memory)},
		{"cpus (--cpus)", num(p.Resources.CPUs)},
		{"pids (--pids-limit)", num(float64(p.Resources.PidsLimit))},
		{"log kept (--max-log)", size(p.Resources.LogBytes)},
		{"build timeout (--build-timeout)", dur(p.Timeouts.Build)},
		{"train timeout (--train-timeout)", dur(p.Timeouts.Train)},
		{"push timeout (--push-timeout)", dur(p.Timeouts.Push)},
		{"build context (--max-context-size)", size(p.ContextBytes)},
		{"jobs waiting (--max-queue)", num(float64(p.MaxQueue))},
		{"contexts waiting (--max-queued-bytes)", size(p.MaxQueuedBytes)},
		{"capabilities (--allow-cap)", list(p.CapAdd)},
		{"networks (--allow-network)", "none (no network), " + list(p.Networks)},
		{"gives root on the host (--allow-host-root)", fmt.Sprint(p.HostRoot)},
		{"build ADD from private addresses (--build-allow-private)", fmt.Sprint(p.BuildPrivateFetch)},
		{"dataset host directories (--dataset-root)", list(p.DatasetRoots) + " (named volumes: any)"},
		{"GPUs (--allow-gpus)", fmt.Sprint(p.GPUs)},
		{"webhooks (--webhook-secret-file)", fmt.Sprint(p.Webhooks)},
		{"webhooks to private addresses (--webhook-allow-private)", fmt.Sprint(p.WebhookPrivate)},
	}
	if len(p.InsecureRegistries) > 0 {
		rows = append(rows, [2]string{"plain-HTTP registries besides loopback (--insecure-registry)", list(p.InsecureRegistries)})
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-58s %s\n", r[0]+":", r[1])
	}
}
