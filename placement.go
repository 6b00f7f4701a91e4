package gantry

import "time"

// Backend names: where a job's training container runs.
const (
	// BackendLocal runs training on the Docker engine gantryd talks to.
	BackendLocal = "local"
	// BackendSwarm runs training as a one-replica service on a Docker
	// Swarm, on whichever node the swarm's scheduler picks.
	BackendSwarm = "swarm"
)

// Placement is where a job's training runs (or ran): the backend, the
// backend's own name for the run (a container, a service), and the node.
type Placement struct {
	Backend string `json:"backend"`
	// Service is the swarm service (gantry-<job ID>); Task its task.
	Service string `json:"service,omitempty"`
	Task    string `json:"task,omitempty"`
	// NodeID and Node are the swarm node's ID and hostname (the engine's
	// hostname on the local backend).
	NodeID string `json:"node_id,omitempty"`
	Node   string `json:"node,omitempty"`
	// Waiting is why the run has not started yet, as the backend's
	// scheduler says it ("no suitable node (insufficient resources on 3
	// nodes)"); empty once it runs.
	Waiting string `json:"waiting,omitempty"`
}

// Attempt is one run of a job's training that the infrastructure lost (a
// node went away): the job was retried after it (Spec.Retries).
type Attempt struct {
	Placement Placement  `json:"placement"`
	Started   *time.Time `json:"started,omitempty"`
	Ended     time.Time  `json:"ended"`
	// Reason says what was lost ("node lost: node worker-2 is down").
	Reason string `json:"reason"`
}

// Node is one machine of the backend's cluster, as gantry nodes shows it.
type Node struct {
	ID       string `json:"id"`
	Hostname string `json:"hostname"`
	Role     string `json:"role"`  // manager, worker
	State    string `json:"state"` // ready, down, unknown, disconnected
	// Availability is active, pause or drain.
	Availability string            `json:"availability"`
	Addr         string            `json:"addr,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	// CPUs and Memory (bytes) are what the node offers; Generic its
	// generic resources ("gpu": 2).
	CPUs    float64          `json:"cpus"`
	Memory  int64            `json:"memory"`
	Generic map[string]int64 `json:"generic,omitempty"`
	// Jobs are the IDs of the jobs training on the node now.
	Jobs []string `json:"jobs,omitempty"`
}

// applyBackend refuses what the policy's backend cannot give spec:
// placement on one engine, and on a swarm GPUs other than a count (they
// are the nodes' generic resources) and datasets (a node's volumes and
// paths are not the ones gantryd can check and pin).
func (p *Policy) applyBackend(spec *Spec) error {
	r := spec.Run
	if p.Backend != BackendSwarm {
		if len(r.Constraints) > 0 {
			return Errorf(ErrInvalid, "constraint %s: gantryd runs training on one engine (the local backend); placement needs gantryd --backend swarm", r.Constraints[0])
		}
		return nil
	}
	if r.GPUs != "" {
		if g, err := ParseGPUs(r.GPUs); err == nil && g.Count <= 0 {
			return Errorf(ErrInvalid, "gpus %s: on a swarm, ask for a number of GPUs (--gpus 1): nodes advertise them as generic resources", r.GPUs)
		}
	}
	if len(r.Datasets) > 0 {
		return Errorf(ErrInvalid, "dataset %s: the swarm backend mounts no datasets yet (a node's volumes and paths cannot be checked and pinned from gantryd); bake the data into the image or run gantryd with the local backend", r.Datasets[0].Source)
	}
	return nil
}

// Cluster is what gantry nodes shows: the backend and its nodes, each with
// the jobs training there.
type Cluster struct {
	Backend string `json:"backend"`
	Nodes   []Node `json:"nodes"`
}
