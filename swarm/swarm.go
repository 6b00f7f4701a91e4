// Package swarm runs a job's training container on a Docker Swarm: each run
// is a replicated service of one replica that is never restarted, created
// with no replica and scaled to one when it runs, so that Create and Run stay
// two steps as on the local engine. gantryd talks to a manager only; the
// service's name (the daemon's container name) is the idempotency key, since
// a manager refuses a second service of the same name.
//
// The swarm keeps images in registries, not on gantryd's engine: a run's
// image is a repo@sha256 reference the nodes pull, with the registry
// credentials Options.RegistryAuth gives.
//
// Outputs. The manager's API cannot copy files out of a container on another
// node, and gantryd cannot reach the nodes' engines. So the training's output
// directory ($GANTRY_OUTPUT_DIR) is a named local volume on its node, unique
// to the run (gantry-out-<random>, labelled with the job). CopyFrom runs a
// one-shot collector service on the same node, from the same image (it is
// there), with that volume mounted at the same path: it writes a tar of the
// directory (docker cp's layout: the directory's base name first) in base64
// to its output, then empties the volume. CopyFrom decodes the collector's
// service log back into the tar. The collector's log holds the outputs until
// the collector is removed: a CopyFrom that is cut off is run again from it,
// and Remove of the run removes its collectors. What is left on the node is
// the empty volume, or the full one of a run whose outputs were never
// collected (a lost run): docker volume prune on the node clears them. The image needs /bin/sh,
// tar, base64, ls and find (any Debian or Alpine base has them); outputs
// travel through the manager's log stream, a third larger than they are.
//
// Limits of the engine (20.10, API 1.41) this follows: a task's status
// carries its exit code but no OOM flag (Exit.OOMProbable); services cannot
// have no network (an internal overlay network isolates them); a followed
// service log does not end when the task does; the manager has no event
// stream of task changes gantry can rely on, so Run polls the task list.
package swarm

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// callTimeout bounds every non-streaming call to the manager (as runner's).
const callTimeout = 30 * time.Second

// DefaultNetwork is the internal overlay network runs join when their spec
// asks for no network.
const DefaultNetwork = "gantry-isolated"

// Options says which manager to talk to and how.
type Options struct {
	// Host is the manager's engine address ("" means DOCKER_HOST, else the
	// local socket).
	Host string
	// Network is the internal overlay network for runs that ask for none
	// (DefaultNetwork when empty); Dial creates it when missing.
	Network string
	// RegistryAuth, when set, returns the encoded registry credentials
	// (base64 JSON, as the engine takes X-Registry-Auth) for an image's
	// registry; they go with the service so that nodes can pull it.
	RegistryAuth func(image string) (string, error)
}

// Backend runs training as services on a swarm, through one manager.
type Backend struct {
	c       *client.Client
	network string
	auth    func(string) (string, error)
}

// Dial connects to the manager and negotiates the API version, and creates
// the isolated network when missing. It returns ErrUnavailable when the
// engine does not answer, and ErrInvalid when it is not a swarm manager.
func Dial(ctx context.Context, o Options) (*Backend, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if o.Host != "" {
		opts = append(opts, client.WithHost(o.Host))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "docker host %q: %v", o.Host, err)
	}
	b := &Backend{c: c, network: o.Network, auth: o.RegistryAuth}
	if b.network == "" {
		b.network = DefaultNetwork
	}
	if err := b.check(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return b, nil
}

// check says whether the engine answers and is a manager, and makes the
// isolated network.
func (b *Backend) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := b.c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return gantry.Errorf(gantry.ErrUnavailable,
			"docker engine at %s does not answer (is dockerd running? set --docker-host or DOCKER_HOST): %v", b.c.DaemonHost(), err)
	}
	info, err := b.c.Info(ctx, client.InfoOptions{})
	if err != nil {
		return gantry.Errorf(gantry.ErrUnavailable, "docker engine at %s: info: %v", b.c.DaemonHost(), err)
	}
	if !info.Info.Swarm.ControlAvailable {
		return gantry.Errorf(gantry.ErrInvalid,
			"docker engine at %s is not a swarm manager (swarm state %q): run docker swarm init there, or point --docker-host at a manager",
			b.c.DaemonHost(), info.Info.Swarm.LocalNodeState)
	}
	return b.ensureNetwork(ctx)
}

// ensureNetwork creates the internal overlay network when missing: no route
// out of the swarm, and no container outside a service can join it.
func (b *Backend) ensureNetwork(ctx context.Context) error {
	_, err := b.c.NetworkInspect(ctx, b.network, client.NetworkInspectOptions{Scope: "swarm"})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", b.network, err)
	}
	_, err = b.c.NetworkCreate(ctx, b.network, client.NetworkCreateOptions{
		Driver: "overlay", Scope: "swarm", Internal: true,
		Labels: map[string]string{"io.gantry.network": "isolated"},
	})
	if err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsAlreadyExists(err) {
		return fmt.Errorf("create the isolated network %s: %w", b.network, err)
	}
	return nil
}

// Name is the backend's name: swarm.
func (b *Backend) Name() string { return gantry.BackendSwarm }

// Close closes the connection.
func (b *Backend) Close() error { return b.c.Close() }

// Ping says whether the manager answers (ErrUnavailable when not).
func (b *Backend) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.c.Ping(ctx, client.PingOptions{}); err != nil {
		return gantry.Errorf(gantry.ErrUnavailable, "swarm manager at %s: %v", b.c.DaemonHost(), err)
	}
	return nil
}

// ImageID always returns ErrNotFound: a swarm keeps no local images that
// gantry made (runs pull them from a registry).
func (b *Backend) ImageID(ctx context.Context, ref string) (string, error) {
	return "", gantry.Errorf(gantry.ErrNotFound, "image %s: a swarm keeps no local images (its nodes pull from a registry)", ref)
}

// RemoveImage removes nothing: the nodes' pulled images are theirs to prune.
func (b *Backend) RemoveImage(ctx context.Context, ref string) error { return nil }

// Nodes lists the swarm's nodes: state, availability, role, address, labels
// and resources. Jobs is left empty (the daemon knows which run where).
func (b *Backend) Nodes(ctx context.Context) ([]gantry.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list swarm nodes: %w", err)
	}
	out := make([]gantry.Node, 0, len(res.Items))
	for _, n := range res.Items {
		r := n.Description.Resources
		g := gantry.Node{
			ID: n.ID, Hostname: n.Description.Hostname,
			Role: string(n.Spec.Role), State: string(n.Status.State),
			Availability: string(n.Spec.Availability), Addr: n.Status.Addr,
			Labels: n.Spec.Labels, CPUs: float64(r.NanoCPUs) / 1e9, Memory: r.MemoryBytes,
		}
		for _, gr := range r.GenericResources {
			if g.Generic == nil {
				g.Generic = map[string]int64{}
			}
			switch {
			case gr.DiscreteResourceSpec != nil:
				g.Generic[gr.DiscreteResourceSpec.Kind] += gr.DiscreteResourceSpec.Value
			case gr.NamedResourceSpec != nil: // one named unit ("gpu=GPU-1a2b")
				g.Generic[gr.NamedResourceSpec.Kind]++
			}
		}
		out = append(out, g)
	}
	return out, nil
}
