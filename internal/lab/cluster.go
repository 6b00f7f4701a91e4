package lab

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/gantry-ml/gantry"
)

// overlayPool is where swarm takes its overlay networks' subnets from, away
// from the lab's own 10.77.0.0/24.
var overlayPool = netip.MustParsePrefix("10.200.0.0/16")

// formSwarm makes node 0 the manager, joins the others as workers, waits
// until every node is Ready, and applies the labels.
func (s *Swarm) formSwarm(ctx context.Context, o SwarmOptions) error {
	mgr := s.clients[0]
	spec := swarm.Spec{}
	if o.Heartbeat > 0 {
		spec.Dispatcher.HeartbeatPeriod = o.Heartbeat
	}
	ictx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := mgr.SwarmInit(ictx, client.SwarmInitOptions{
		ListenAddr: nodeAddr(0) + ":2377", AdvertiseAddr: nodeAddr(0),
		Spec: spec, DefaultAddrPool: []netip.Prefix{overlayPool}, SubnetSize: 24,
	}); err != nil {
		return fmt.Errorf("swarm init on node 0: %w", err)
	}
	insp, err := mgr.SwarmInspect(ictx, client.SwarmInspectOptions{})
	if err != nil {
		return fmt.Errorf("swarm inspect: %w", err)
	}
	token := insp.Swarm.JoinTokens.Worker
	g, gctx := errgroup.WithContext(ictx)
	for i := 1; i < len(s.Nodes); i++ {
		g.Go(func() error {
			_, err := s.clients[i].SwarmJoin(gctx, client.SwarmJoinOptions{
				ListenAddr: nodeAddr(i) + ":2377", AdvertiseAddr: nodeAddr(i),
				RemoteAddrs: []string{nodeAddr(0) + ":2377"}, JoinToken: token,
			})
			if err != nil {
				return fmt.Errorf("node %d join: %w", i, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := s.nodeIDs(ictx); err != nil {
		return err
	}
	if err := s.WaitNodes(ctx, swarm.NodeStateReady, 90*time.Second, allNodes(len(s.Nodes))...); err != nil {
		return err
	}
	s.logf("lab: swarm formed, %d nodes ready", len(s.Nodes))
	return s.applyLabels(ctx, o.Labels)
}

// nodeIDs learns each node's swarm node ID from its own engine.
func (s *Swarm) nodeIDs(ctx context.Context) error {
	for i, c := range s.clients {
		info, err := c.Info(ctx, client.InfoOptions{})
		if err != nil {
			return fmt.Errorf("node %d info: %w", i, err)
		}
		if info.Info.Swarm.NodeID == "" {
			return gantry.Errorf(gantry.ErrUnavailable, "node %d has no swarm node ID (state %s)", i, info.Info.Swarm.LocalNodeState)
		}
		s.Nodes[i].ID = info.Info.Swarm.NodeID
	}
	return nil
}

func allNodes(n int) []int {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return all
}

// WaitNodes waits until the manager reports each of the given nodes in
// state (swarm.NodeStateReady, swarm.NodeStateDown), polling, since the
// engine offers no event for it, up to limit. It returns ErrUnavailable
// when the limit passes first.
func (s *Swarm) WaitNodes(ctx context.Context, state swarm.NodeState, limit time.Duration, nodes ...int) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last string
	for {
		list, err := s.clients[0].NodeList(ctx, client.NodeListOptions{})
		if err == nil {
			byID := map[string]swarm.NodeState{}
			for _, n := range list.Items {
				byID[n.ID] = n.Status.State
			}
			last = fmt.Sprint(byID)
			done := true
			for _, i := range nodes {
				if byID[s.Nodes[i].ID] != state {
					done = false
				}
			}
			if done {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return gantry.Errorf(gantry.ErrUnavailable, "lab nodes %v not %s after %s: %s", nodes, state, limit, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// applyLabels adds labels to the nodes, through the manager.
func (s *Swarm) applyLabels(ctx context.Context, labels map[int]map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	mgr := s.clients[0]
	for i, l := range labels {
		n, err := mgr.NodeInspect(ctx, s.Nodes[i].ID, client.NodeInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect node %d: %w", i, err)
		}
		spec := n.Node.Spec
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		maps.Copy(spec.Labels, l)
		if _, err := mgr.NodeUpdate(ctx, s.Nodes[i].ID, client.NodeUpdateOptions{Version: n.Node.Version, Spec: spec}); err != nil {
			return fmt.Errorf("label node %d: %w", i, err)
		}
	}
	return nil
}
