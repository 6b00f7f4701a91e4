// gantry nodes: where training runs, and what trains on each node.

package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func nodesCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "nodes",
		Short: "List the nodes training runs on: their state, labels, resources and jobs",
		Long: `Nodes lists where gantryd runs training: on the local backend the one Docker
engine, on a swarm (gantryd --backend swarm) every node of the cluster with its
role, state, availability, labels (for --constraint node.labels.KEY==VALUE),
CPUs, memory and generic resources (GPUs, for --gpus N), and the jobs training
there now.`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(c *cobra.Command, _ []string, cl *api.Client) error {
			l, err := cl.Nodes(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.OutOrStdout(), l)
			}
			return writeNodes(c.OutOrStdout(), l)
		}),
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the nodes as JSON")
	return c
}

// writeNodes writes l as a table, a row per node.
func writeNodes(w io.Writer, l gantry.Cluster) error {
	fmt.Fprintf(w, "backend: %s\n", l.Backend)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHOSTNAME\tROLE\tSTATE\tAVAILABILITY\tCPUS\tMEMORY\tGENERIC\tLABELS\tJOBS")
	for _, n := range l.Nodes {
		fmt.Fprintf(tw, "%.12s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			n.ID, n.Hostname, n.Role, n.State, n.Availability,
			strconv.FormatFloat(n.CPUs, 'f', -1, 64), gantry.HumanBytes(n.Memory),
			orDash(joinKV(n.Generic, func(v int64) string { return strconv.FormatInt(v, 10) })),
			orDash(joinKV(n.Labels, func(v string) string { return v })),
			orDash(strings.Join(n.Jobs, ",")))
	}
	return tw.Flush()
}

// joinKV writes m as k=v pairs in the order of the keys.
func joinKV[V any](m map[string]V, show func(V) string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+show(m[k]))
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
