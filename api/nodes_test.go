package api

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/gantry-ml/gantry"
)

func (f *fakeService) Nodes(ctx context.Context) (gantry.Cluster, error) {
	if f.nodes == nil {
		return gantry.Cluster{}, errUnexpected
	}
	return f.nodes(ctx)
}

func TestClientNodes(t *testing.T) {
	ctx := context.Background()
	want := gantry.Cluster{Backend: gantry.BackendSwarm, Nodes: []gantry.Node{
		{ID: "n1", Hostname: "m", Role: "manager", State: "ready", Availability: "active", CPUs: 2, Memory: 1 << 30},
		{ID: "n2", Hostname: "w", Role: "worker", State: "down", Generic: map[string]int64{"gpu": 2}, Labels: map[string]string{"pool": "train"}, Jobs: []string{"j1"}},
	}}
	c := serveClient(t, &fakeService{nodes: func(context.Context) (gantry.Cluster, error) { return want, nil }})
	if got, err := c.Nodes(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Nodes() = %+v, %v; want %+v", got, err, want)
	}
	// No nodes is an empty list, not null; an unreachable backend is 503.
	c = serveClient(t, &fakeService{nodes: func(context.Context) (gantry.Cluster, error) {
		return gantry.Cluster{Backend: gantry.BackendLocal}, nil
	}})
	if got, err := c.Nodes(ctx); err != nil || got.Nodes == nil || len(got.Nodes) != 0 {
		t.Errorf("Nodes() = %#v, %v; want an empty list", got, err)
	}
	c = serveClient(t, &fakeService{nodes: func(context.Context) (gantry.Cluster, error) {
		return gantry.Cluster{}, gantry.Errorf(gantry.ErrUnavailable, "the swarm manager does not answer")
	}})
	if _, err := c.Nodes(ctx); !errors.Is(err, gantry.ErrUnavailable) {
		t.Errorf("Nodes() = %v, want ErrUnavailable", err)
	}
}
