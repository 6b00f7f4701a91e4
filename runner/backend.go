package runner

import (
	"context"
	"io"
	"time"

	"github.com/gantry-ml/gantry"
)

// Backend runs a job's training container somewhere and finds it again.
// Engine (the Docker engine gantryd talks to) is the local backend;
// swarm.Backend runs it as a service on a Docker Swarm. The daemon drives
// every backend through the same steps, and keeps its record before each
// side effect:
//
//	Create   prepare the run, not started, named s.Name: the name is the
//	         idempotency key (a crash between Create and the record leaves
//	         a run of that name, which Remove(name) clears before a new
//	         Create). It returns the backend's ID, which the record keeps.
//	Run      start it unless it ran, follow its output from the start (the
//	         caller skips what it holds: every byte once), return its Exit.
//	State    find it after a restart: running, or how it ended.
//	Stop     SIGTERM, then SIGKILL after grace.
//	Remove   remove it and what it holds (by ID or by name); gone is fine.
//	Containers  list what carries the given labels (the daemon's
//	         instance): the orphan sweep.
//	CopyFrom read a path of its file system after it ended (outputs).
//
// The shape follows Woodpecker's pipeline backends and Nomad's task
// drivers (a handle found again by a deterministic name, an exit that
// tells the user's failure from the infrastructure's). A Kubernetes Jobs
// backend maps onto it as docs/backends.md describes.
type Backend interface {
	// Name is the backend's name in job records (gantry.BackendLocal...).
	Name() string
	Create(ctx context.Context, s Spec) (string, error)
	Run(ctx context.Context, id string, out io.Writer, watch Watch) (Exit, error)
	State(ctx context.Context, id string) (State, error)
	Stop(ctx context.Context, id string, grace time.Duration) error
	Remove(ctx context.Context, id string) error
	CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error)
	// Volume returns a named volume for a job's datasets (ErrNotFound
	// when there is none; ErrInvalid when the backend cannot mount one).
	Volume(ctx context.Context, name string) (Volume, error)
	Containers(ctx context.Context, labels map[string]string) ([]Container, error)
	// Ping says whether the backend answers (ErrUnavailable when not).
	Ping(ctx context.Context) error
}

// Watch, when not nil, is told where a run is placed each time that
// changes while Run follows it: the node it landed on, or why it waits.
type Watch func(gantry.Placement)

// Exit is how a run ended. Lost, when set, says the infrastructure lost
// it (a node went down): the user's code did not fail, and the job may be
// tried again.
type Exit struct {
	Code      int
	OOMKilled bool
	// OOMProbable is set where the backend cannot know (a swarm task's
	// status carries no OOM flag): exit code 137 under a memory limit.
	OOMProbable bool
	Lost        string
}

// Noder is a backend made of several machines: gantry nodes lists them.
type Noder interface {
	Nodes(ctx context.Context) ([]gantry.Node, error)
}
