package daemon

import (
	"context"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// Nodes lists where training runs, each node with the jobs training on it
// now (by their recorded placement). It returns ErrUnavailable when the
// backend does not answer.
func (d *Daemon) Nodes(ctx context.Context) (gantry.Cluster, error) {
	c := gantry.Cluster{Backend: d.engine.Name()}
	noder, ok := d.engine.(runner.Noder)
	if !ok {
		return c, nil
	}
	nodes, err := noder.Nodes(ctx)
	if err != nil {
		return c, err
	}
	jobs, _, err := d.store.List(ctx, gantry.JobFilter{Limit: 1000, States: []gantry.State{gantry.StateRunning}})
	if err != nil {
		return c, err
	}
	for i := range nodes {
		n := &nodes[i]
		for _, j := range jobs {
			if p := j.Placement; p != nil && onNode(*p, *n) {
				n.Jobs = append(n.Jobs, j.ID)
			}
		}
	}
	c.Nodes = nodes
	return c, nil
}

// onNode reports whether placement p is on node n: by the swarm's node ID,
// or on the local backend (which has one node) always.
func onNode(p gantry.Placement, n gantry.Node) bool {
	if p.NodeID != "" {
		return p.NodeID == n.ID
	}
	return p.Backend == gantry.BackendLocal && p.Waiting == ""
}
