package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/gantry-ml/gantry"
)

// cacheDir keeps what is worth keeping between runs: the registry's storage
// (the pushed base images) and each node's data root (the images it
// pulled). Nothing else a lab creates outlives its Close.
// Other labs keep their own entries in it.
const cacheDir = "/var/cache/gantry-lab"

// nodeRootPrefix starts the cached data root of every node: nodeRoot(i).
const nodeRootPrefix = cacheDir + "/node"

func nodeRoot(i int) string { return nodeRootPrefix + strconv.Itoa(i) }

// SwarmOptions says what cluster StartSwarm makes. The zero value is a
// three-node swarm without GPUs, labels or images.
type SwarmOptions struct {
	// Nodes is how many dockerd "hosts" to start: node 0 is the manager,
	// the rest are workers. Zero means 3.
	Nodes int
	// GPUNode is the index of the node started with
	// --node-generic-resource gpu=GPUs. Zero means none: the manager
	// (node 0) is never the GPU node, so the zero value has no GPUs.
	GPUNode int
	// GPUs is how many discrete GPUs the GPU node advertises. Zero means 2.
	GPUs int
	// Labels are node labels set on the swarm nodes, by node index, e.g.
	// {2: {"pool": "train"}}.
	Labels map[int]map[string]string
	// Images are references of images on the HOST engine to make
	// available in the lab registry, e.g. "gantry/python-ml:bookworm",
	// pulled by the nodes as Swarm.Image(ref). An image is pushed only
	// when the registry (whose storage outlives runs) lacks it.
	Images []string
	// Heartbeat is the swarm's dispatcher heartbeat period; a cut-off node
	// is marked down after a few of them. Zero keeps swarm's default (5 s,
	// a node down after about 45 s).
	Heartbeat time.Duration
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Node is one dockerd "host" of the lab.
type Node struct {
	// Name is the lab's name of the node: "node0", "node1", ...
	Name string
	// NetNS is the network namespace the node's dockerd runs in.
	NetNS string
	// Host is the node's engine socket, reachable from the host, as a
	// DOCKER_HOST value: "unix:///run/gantry-lab-swarm/RUN/n0.sock".
	Host string
	// Addr is the node's IP address on the lab's bridge.
	Addr string
	// ID is the node's swarm node ID.
	ID string
	// Hostname is the node's hostname, its Description.Hostname.
	Hostname string
}

// Swarm is a running lab cluster. Close stops it.
type Swarm struct {
	// Nodes are the swarm's nodes; Nodes[0] is the manager and leader.
	Nodes []Node
	// Registry is the lab registry's address, "10.77.0.1:5000": plain
	// HTTP, no auth, reachable from the host and from every node.
	Registry string

	names    netNames
	logf     func(string, ...any)
	lock     *os.File
	registry *process
	dockerds []*process
	clients  []*client.Client

	closeOnce sync.Once
	closeErr  error
}

// StartSwarm starts a real Docker Swarm of o.Nodes dockerd, each in a
// network namespace of its own, joined by a bridge in a further namespace
// that also holds the lab registry, and waits until every node is Ready. It
// first removes the leftovers of an earlier lab whose process died, and
// waits for a lab still running in another process to close (they would
// share the subnet). On failure it undoes what it did. It returns
// ErrForbidden when not run as root, ErrInvalid for bad options,
// ErrUnavailable when a daemon does not come up or the swarm does not form.
func StartSwarm(ctx context.Context, o SwarmOptions) (*Swarm, error) {
	if os.Geteuid() != 0 {
		return nil, gantry.Errorf(gantry.ErrForbidden, "the swarm lab needs root (it creates network namespaces and runs dockerd)")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	logw := o.Log
	if logw == nil {
		logw = discard
	}
	began := time.Now()
	s := &Swarm{Registry: registryAddr, logf: func(f string, a ...any) {
		fmt.Fprintf(logw, "%6.1fs "+f+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}}
	if s.lock, err = acquireLock(ctx, s.logf); err != nil {
		return nil, err
	}
	s.logf("lab: lock taken")
	if err := cleanStale(ctx); err != nil {
		s.lock.Close()
		return nil, fmt.Errorf("remove a previous lab's leftovers: %w", err)
	}
	s.logf("lab: leftovers of earlier runs removed")
	s.names = netNames{run: runID()}
	if err := s.start(ctx, o); err != nil {
		if cerr := s.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", cerr))
		}
		return nil, err
	}
	s.logf("lab: swarm of %d nodes ready", len(s.Nodes))
	return s, nil
}

func (o SwarmOptions) withDefaults() (SwarmOptions, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.GPUs == 0 {
		o.GPUs = 2
	}
	if o.Nodes < 1 || o.Nodes > 200 {
		return o, gantry.Errorf(gantry.ErrInvalid, "lab nodes: %d is not between 1 and 200", o.Nodes)
	}
	if o.GPUNode < 0 || o.GPUNode >= o.Nodes {
		return o, gantry.Errorf(gantry.ErrInvalid, "lab GPU node %d: not a worker of %d nodes", o.GPUNode, o.Nodes)
	}
	for i := range o.Labels {
		if i < 0 || i >= o.Nodes {
			return o, gantry.Errorf(gantry.ErrInvalid, "lab labels for node %d: there are %d nodes", i, o.Nodes)
		}
	}
	return o, nil
}

// start does StartSwarm's work; Close undoes whatever part of it was done.
func (s *Swarm) start(ctx context.Context, o SwarmOptions) error {
	n := s.names
	if err := os.MkdirAll(n.runDir(), 0o700); err != nil {
		return err
	}
	if err := setupBridge(ctx, n); err != nil {
		return fmt.Errorf("lab bridge: %w", err)
	}
	for i := 0; i < o.Nodes; i++ {
		if err := setupNode(ctx, n, i); err != nil {
			return fmt.Errorf("lab node %d network: %w", i, err)
		}
		s.Nodes = append(s.Nodes, Node{
			Name: "node" + strconv.Itoa(i), NetNS: n.nodeNS(i), Addr: nodeAddr(i),
			Host: "unix://" + n.nodeSocket(i), Hostname: nodeHostname(i),
		})
	}
	s.logf("lab: network up (%s.0/24, bridge in namespace %s)", subnetPrefix[:len(subnetPrefix)-1], n.bridgeNS())
	var err error
	if s.registry, err = startRegistry(ctx, n, filepath.Join(cacheDir, "registry")); err != nil {
		return err
	}
	s.logf("lab: registry at %s", registryAddr)
	// The engines start while the images are pushed: a cold push takes
	// the longest.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pushImages(gctx, o.Images, s.logf) })
	g.Go(func() error { return s.startEngines(gctx, o) })
	if err := g.Wait(); err != nil {
		return err
	}
	return s.formSwarm(ctx, o)
}

// startEngines starts every node's dockerd and waits until all answer, then
// removes containers an earlier run left in the cached data roots.
func (s *Swarm) startEngines(ctx context.Context, o SwarmOptions) error {
	for i := range s.Nodes {
		root := nodeRoot(i)
		if err := resetDataRoot(root); err != nil {
			return fmt.Errorf("lab node %d data root: %w", i, err)
		}
		p, err := startDockerd(s.names, i, root, o)
		if err != nil {
			return err
		}
		s.dockerds = append(s.dockerds, p)
		c, err := dial(s.Nodes[i].Host)
		if err != nil {
			return err
		}
		s.clients = append(s.clients, c)
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := range s.Nodes {
		g.Go(func() error {
			if err := waitEngine(gctx, s.clients[i], s.dockerds[i], 90*time.Second); err != nil {
				return err
			}
			return removeContainers(gctx, s.clients[i])
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.logf("lab: %d engines up", len(s.Nodes))
	return nil
}

// removeContainers force-removes every container of an engine.
func removeContainers(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	list, err := c.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var errs []error
	for _, ctr := range list.Items {
		if _, err := c.ContainerRemove(ctx, ctr.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			errs = append(errs, fmt.Errorf("remove container %s: %w", ctr.ID, err))
		}
	}
	return errors.Join(errs...)
}

// Manager is the swarm's manager node (node 0, the leader).
func (s *Swarm) Manager() Node { return s.Nodes[0] }

// Client is the lab's client of node i's engine, with the API version
// negotiated. The Swarm owns it: Close closes it.
func (s *Swarm) Client(i int) *client.Client { return s.clients[i] }

// Image is the lab-registry reference of a host image given in
// SwarmOptions.Images: "gantry/python-ml:bookworm" is
// "10.77.0.1:5000/gantry/python-ml:bookworm". A reference that does not
// parse is returned unchanged.
func (s *Swarm) Image(ref string) string {
	r, err := labRef(ref)
	if err != nil {
		return ref
	}
	return r
}

// Cut takes node i off the network (its veth's bridge end goes down), as a
// partitioned worker. It returns ErrInvalid for a node that does not exist.
func (s *Swarm) Cut(ctx context.Context, node int) error { return s.setLink(ctx, node, "down") }

// Heal puts node i back on the network after Cut. It returns ErrInvalid for
// a node that does not exist.
func (s *Swarm) Heal(ctx context.Context, node int) error { return s.setLink(ctx, node, "up") }

func (s *Swarm) setLink(ctx context.Context, node int, state string) error {
	if node < 0 || node >= len(s.Nodes) {
		return gantry.Errorf(gantry.ErrInvalid, "lab node %d: there are %d nodes", node, len(s.Nodes))
	}
	if err := ip(ctx, "-n", s.names.bridgeNS(), "link", "set", s.names.bridgeLink(node), state); err != nil {
		return fmt.Errorf("lab node %d link %s: %w", node, state, err)
	}
	s.logf("lab: node %d link %s", node, state)
	return nil
}

// runID is a short random name for one run's namespaces and links.
func runID() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
