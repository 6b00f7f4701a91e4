package swarm

// A run's service: its spec, and the calls that find, scale and remove it.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// The labels gantry keeps on a run's service (not on its container): the
// output volume and where it is mounted, whether the run was started, and
// on a collector, the service it collects from.
const (
	labelOutVolume = "io.gantry.swarm.output-volume"
	labelOutDir    = "io.gantry.swarm.output-dir"
	labelStarted   = "io.gantry.swarm.started"
	labelCollects  = "io.gantry.swarm.collects"
)

// serviceSpec is s as a service of no replica yet (Run scales it to one),
// never restarted, that keeps its output directory in volume.
func (b *Backend) serviceSpec(s runner.Spec, volume, outDir string) (swarm.ServiceSpec, error) {
	if len(s.Mounts) > 0 {
		return swarm.ServiceSpec{}, gantry.Errorf(gantry.ErrInvalid, "mount %s: the swarm backend mounts no datasets (a node's paths and volumes cannot be checked from gantryd)", s.Mounts[0].Source)
	}
	if len(s.GPUs.DeviceIDs) > 0 || s.GPUs.Count < 0 {
		return swarm.ServiceSpec{}, gantry.Errorf(gantry.ErrInvalid, "gpus: on a swarm, ask for a number of GPUs: nodes advertise them as generic resources")
	}
	network := s.Network
	if network == "" {
		network = b.network
	}
	cs := &swarm.ContainerSpec{
		Image:  s.Image,
		Labels: s.Labels,
		Args:   s.Cmd, // as docker run IMAGE ARGS: the entrypoint stays
		Env:    s.Env,
		// Least privilege, as on the local engine. (Engines before API
		// 1.44, Docker 25, ignore NoNewPrivileges on services.)
		CapabilityAdd:  s.CapAdd,
		CapabilityDrop: []string{"ALL"},
		Privileges:     &swarm.Privileges{NoNewPrivileges: true},
	}
	if s.StopGrace > 0 {
		grace := s.StopGrace
		cs.StopGracePeriod = &grace
	}
	if outDir != "" {
		cs.Mounts = append(cs.Mounts, mount.Mount{Type: mount.TypeVolume, Source: volume, Target: outDir,
			VolumeOptions: &mount.VolumeOptions{Labels: s.Labels}})
	}
	if s.ShmSize > 0 {
		cs.Mounts = append(cs.Mounts, mount.Mount{Type: mount.TypeTmpfs, Target: "/dev/shm",
			TmpfsOptions: &mount.TmpfsOptions{SizeBytes: s.ShmSize}})
	}
	// What a run may use, it reserves: the scheduler places it on a node
	// with that much free, and a node runs no more than it holds (as a
	// Kubernetes pod whose requests equal its limits).
	res := &swarm.ResourceRequirements{
		Limits:       &swarm.Limit{MemoryBytes: s.Memory, NanoCPUs: s.NanoCPUs, Pids: s.PidsLimit},
		Reservations: &swarm.Resources{MemoryBytes: s.Memory, NanoCPUs: s.NanoCPUs},
	}
	if s.GPUs.Count > 0 {
		res.Reservations.GenericResources = []swarm.GenericResource{{
			DiscreteResourceSpec: &swarm.DiscreteGenericResource{Kind: "gpu", Value: int64(s.GPUs.Count)},
		}}
	}
	labels := map[string]string{labelOutVolume: volume, labelOutDir: outDir}
	for k, v := range s.Labels {
		labels[k] = v
	}
	zero := uint64(0)
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: s.Name, Labels: labels},
		Mode:        swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &zero}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: cs,
			Resources:     res,
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
			Placement:     &swarm.Placement{Constraints: s.Constraints},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: network}},
			LogDriver:     logDriver(s.LogBytes),
		},
	}, nil
}

// logDriver is json-file, which service logs can read back, holding at most
// one file of max bytes (none: unbounded).
func logDriver(max int64) *swarm.Driver {
	d := &swarm.Driver{Name: "json-file"}
	if max > 0 {
		d.Options = map[string]string{"max-size": fmt.Sprint(max), "max-file": "1"}
	}
	return d
}

// Create creates the service for s, with no replica, and returns its ID.
// It returns ErrConflict when a service of that name exists (Remove it by
// name first), ErrInvalid for what a swarm cannot give s (datasets, GPUs by
// device), and the manager's refusal of the spec as ErrInvalid.
func (b *Backend) Create(ctx context.Context, s runner.Spec) (string, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	volume := "gantry-out-" + hex.EncodeToString(rnd[:])
	spec, err := b.serviceSpec(s, volume, runner.OutputDir(s.Env))
	if err != nil {
		return "", err
	}
	opts := client.ServiceCreateOptions{Spec: spec}
	if b.auth != nil {
		if opts.EncodedRegistryAuth, err = b.auth(s.Image); err != nil {
			return "", fmt.Errorf("registry credentials for %s: %w", s.Image, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.ServiceCreate(ctx, opts)
	switch {
	case cerrdefs.IsConflict(err) || cerrdefs.IsAlreadyExists(err):
		return "", gantry.Errorf(gantry.ErrConflict, "create service %s: a service of that name exists: %v", s.Name, err)
	case cerrdefs.IsInvalidArgument(err):
		return "", gantry.Errorf(gantry.ErrInvalid, "create service %s: %v", s.Name, err)
	case err != nil:
		return "", fmt.Errorf("create service %s: %w", s.Name, err)
	}
	return res.ID, nil
}

// inspect returns service id (an ID or a name); ErrNotFound when it is gone.
func (b *Backend) inspect(ctx context.Context, id string) (swarm.Service, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.ServiceInspect(ctx, id, client.ServiceInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return swarm.Service{}, gantry.Errorf(gantry.ErrNotFound, "service %.25s: no longer exists", id)
		}
		return swarm.Service{}, fmt.Errorf("inspect service %.25s: %w", id, err)
	}
	return res.Service, nil
}

// task returns the newest task of service id, and false when it has none.
func (b *Backend) task(ctx context.Context, id string) (swarm.Task, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.TaskList(ctx, client.TaskListOptions{Filters: client.Filters{}.Add("service", id)})
	if err != nil {
		return swarm.Task{}, false, fmt.Errorf("list the tasks of service %.25s: %w", id, err)
	}
	if len(res.Items) == 0 {
		return swarm.Task{}, false, nil
	}
	ts := res.Items
	sort.Slice(ts, func(i, j int) bool { return ts[i].CreatedAt.After(ts[j].CreatedAt) })
	return ts[0], true, nil
}

// terminal says whether a task in state st has ended.
func terminal(st swarm.TaskState) bool {
	switch st {
	case swarm.TaskStateComplete, swarm.TaskStateFailed, swarm.TaskStateRejected,
		swarm.TaskStateShutdown, swarm.TaskStateOrphaned, swarm.TaskStateRemove:
		return true
	}
	return false
}

// scale sets service svc's replicas, marking it started when they are one.
// The manager bumps a new service's version as it allocates it, and
// refuses an update of an older version ("update out of sequence"): an
// update refused while the version moved on is tried again.
func (b *Backend) scale(ctx context.Context, svc swarm.Service, n uint64) error {
	for try := 0; ; try++ {
		err := b.update(ctx, svc, n)
		if err == nil || try == 10 {
			return err
		}
		fresh, ierr := b.inspect(ctx, svc.ID)
		if ierr != nil {
			return ierr
		}
		if fresh.Version.Index == svc.Version.Index {
			return err
		}
		svc = fresh
	}
}

// update updates svc's spec (at its version) to n replicas.
func (b *Backend) update(ctx context.Context, svc swarm.Service, n uint64) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	spec := svc.Spec
	spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &n}
	if n > 0 {
		labels := map[string]string{labelStarted: "true"}
		for k, v := range spec.Labels {
			labels[k] = v
		}
		spec.Labels = labels
	}
	// With no credentials given, the manager keeps the spec's own.
	_, err := b.c.ServiceUpdate(ctx, svc.ID, client.ServiceUpdateOptions{Version: svc.Version, Spec: spec})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return gantry.Errorf(gantry.ErrNotFound, "service %s: no longer exists", svc.Spec.Name)
		}
		return fmt.Errorf("scale service %s to %d: %w", svc.Spec.Name, n, err)
	}
	return nil
}

// replicas is svc's replica count.
func replicas(svc swarm.Service) uint64 {
	if r := svc.Spec.Mode.Replicated; r != nil && r.Replicas != nil {
		return *r.Replicas
	}
	return 0
}

// State returns what the swarm knows of run id now. A run never started is
// not running with exit code 0 (as a created container); one stopped whose
// task the swarm has dropped ended with 137 (killed). It returns
// ErrNotFound when the service is gone.
func (b *Backend) State(ctx context.Context, id string) (runner.State, error) {
	svc, err := b.inspect(ctx, id)
	if err != nil {
		return runner.State{}, err
	}
	t, ok, err := b.task(ctx, svc.ID)
	if err != nil {
		return runner.State{}, err
	}
	if !ok {
		if svc.Spec.Labels[labelStarted] != "" {
			return runner.State{ExitCode: 137, FinishedAt: svc.UpdatedAt}, nil
		}
		return runner.State{}, nil
	}
	if !terminal(t.Status.State) {
		return runner.State{Running: true}, nil
	}
	st := runner.State{FinishedAt: t.Status.Timestamp, ExitCode: exitCode(t)}
	return st, nil
}

// exitCode is an ended task's exit code; one that never ran has none, and
// counts as 1 (a failure).
func exitCode(t swarm.Task) int {
	if cs := t.Status.ContainerStatus; cs != nil && (cs.ExitCode != 0 || t.Status.State == swarm.TaskStateComplete) {
		return cs.ExitCode
	}
	if t.Status.State == swarm.TaskStateComplete {
		return 0
	}
	return 1
}

// Stop scales run id to no replica: the swarm stops its task, SIGTERM then
// SIGKILL after the grace period the run was created with (s.StopGrace;
// grace only bounds the wait here). It returns once the task has ended. A
// service that is gone is not an error.
func (b *Backend) Stop(ctx context.Context, id string, grace time.Duration) error {
	svc, err := b.inspect(ctx, id)
	if err != nil {
		if gantryNotFound(err) {
			return nil
		}
		return err
	}
	if replicas(svc) > 0 {
		if err := b.scale(ctx, svc, 0); err != nil {
			if gantryNotFound(err) {
				return nil
			}
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, grace+callTimeout)
	defer cancel()
	for {
		t, ok, err := b.task(wctx, svc.ID)
		if err != nil || !ok || terminal(t.Status.State) {
			return err
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("stop service %s: its task is still %s", svc.Spec.Name, t.Status.State)
		case <-time.After(pollInterval):
		}
	}
}

// Remove removes run id (an ID or a name) and the collectors of its
// outputs; the swarm kills a task that still runs. A service that is gone is
// not an error. (The run's output volume stays on its node, emptied when its
// outputs were collected.)
func (b *Backend) Remove(ctx context.Context, id string) error {
	ids := []string{id}
	if svc, err := b.inspect(ctx, id); err == nil {
		ids = append(ids, svc.ID, svc.Spec.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	seen := map[string]bool{}
	var found []swarm.Service
	for _, key := range ids {
		for _, label := range []string{labelCollects, labelCollectsName} {
			res, err := b.c.ServiceList(ctx, client.ServiceListOptions{Filters: client.Filters{}.Add("label", label+"="+key)})
			if err != nil {
				return fmt.Errorf("list the collectors of service %.25s: %w", id, err)
			}
			found = append(found, res.Items...)
		}
	}
	for _, c := range found {
		if !seen[c.ID] {
			seen[c.ID] = true
			if err := b.remove(ctx, c.ID); err != nil {
				return err
			}
		}
	}
	return b.remove(ctx, id)
}

// remove removes one service; gone is fine.
func (b *Backend) remove(ctx context.Context, id string) error {
	if _, err := b.c.ServiceRemove(ctx, id, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove service %.25s: %w", id, err)
	}
	return nil
}

// Containers lists the services (runs, and collectors of their outputs)
// that carry all the given labels.
func (b *Backend) Containers(ctx context.Context, labels map[string]string) ([]runner.Container, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	f := client.Filters{}
	for k, v := range labels {
		f = f.Add("label", k+"="+v)
	}
	res, err := b.c.ServiceList(ctx, client.ServiceListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	out := make([]runner.Container, 0, len(res.Items))
	for _, s := range res.Items {
		out = append(out, runner.Container{ID: s.ID, Labels: s.Spec.Labels, Created: s.CreatedAt})
	}
	return out, nil
}

// Volume returns ErrInvalid: the swarm backend mounts no datasets.
func (b *Backend) Volume(ctx context.Context, name string) (runner.Volume, error) {
	return runner.Volume{}, gantry.Errorf(gantry.ErrInvalid, "volume %s: the swarm backend mounts no datasets (a node's volumes cannot be checked from gantryd)", name)
}
