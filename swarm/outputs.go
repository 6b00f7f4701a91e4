package swarm

// Outputs: a collector service on the run's node reads its output volume
// (see the package doc).

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// labelCollectsName is the name of the service a collector collects from
// (labelCollects holds its ID): Remove finds collectors by either.
const labelCollectsName = "io.gantry.swarm.collects-name"

// collectScript writes a tar of the directory $1 (its base name first, as
// docker cp) in base64 to stdout, then empties the directory. It exits with
// collectEmpty when the directory is missing or empty, and 1 when tar fails
// (dash has no pipefail: tar's status comes back through fd 4).
const collectScript = `d="$1"
[ -d "$d" ] && [ -n "$(ls -A "$d")" ] || exit 3
cd "$(dirname "$d")" || exit 1
exec 3>&1
rc=$( { { tar -cf - "$(basename "$d")"; echo $? >&4; } | base64 >&3; } 4>&1 )
[ "$rc" = 0 ] || exit 1
find "$d" -mindepth 1 -delete || true
`

const (
	collectEmpty = 3
	// collectPending bounds how long a collector may wait to start.
	collectPending = 2 * time.Minute
)

// CopyFrom returns a tar stream of path in run id once it ended, as docker
// cp reads it: the first entry is path's own base name. Only the run's
// output directory ($GANTRY_OUTPUT_DIR, kept in a volume on its node) can be
// read. The caller closes the stream; ctx ends it. It returns ErrNotFound
// when the directory is empty (the training wrote nothing) or the run never
// ran; a service that is gone, or a node that is down, is another error.
// The collector service stays, holding the outputs, until Remove(id): a
// CopyFrom run again reads them from it.
func (b *Backend) CopyFrom(ctx context.Context, id, p string) (io.ReadCloser, error) {
	svc, err := b.inspect(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("copy %s: the service is gone: %v", p, err)
	}
	dir, vol := svc.Spec.Labels[labelOutDir], svc.Spec.Labels[labelOutVolume]
	if dir == "" || path.Clean(p) != path.Clean(dir) {
		return nil, fmt.Errorf("copy %s from service %s: only the output directory ($%s, %q) of a swarm run is kept", p, svc.Spec.Name, gantry.OutputDirEnv, dir)
	}
	t, ok, err := b.task(ctx, svc.ID)
	if err != nil {
		return nil, err
	}
	if !ok || t.NodeID == "" {
		return nil, gantry.Errorf(gantry.ErrNotFound, "%s: service %s never ran on a node", p, svc.Spec.Name)
	}
	if !terminal(t.Status.State) {
		return nil, fmt.Errorf("copy %s from service %s: its task is still %s", p, svc.Spec.Name, t.Status.State)
	}
	if b.nodeDown(ctx, t.NodeID) {
		return nil, gantry.Errorf(gantry.ErrUnavailable, "copy %s from service %s: its node %s is down", p, svc.Spec.Name, t.NodeID)
	}
	cid, err := b.collector(ctx, svc, t, vol, dir)
	if err != nil {
		return nil, err
	}
	ct, err := b.awaitCollector(ctx, cid)
	if err != nil {
		return nil, err
	}
	switch code := exitCode(ct); {
	case code == collectEmpty:
		return nil, gantry.Errorf(gantry.ErrNotFound, "%s: empty in service %s", p, svc.Spec.Name)
	case code != 0:
		msg := b.collectorErr(ctx, cid)
		b.removeSoon(ctx, cid) // the volume is intact: a new collector may do better
		return nil, fmt.Errorf("copy %s from service %s: the collector on node %s exited with %d: %s", p, svc.Spec.Name, t.NodeID, code, msg)
	}
	return b.collected(ctx, cid)
}

// collector creates (or finds, from an earlier CopyFrom) the collector of
// volume, mounted at dir, on the node of svc's task t, and returns its ID.
func (b *Backend) collector(ctx context.Context, svc swarm.Service, t swarm.Task, vol, dir string) (string, error) {
	name := collectorName(svc.Spec.Name, t.ID)
	tmpl := svc.Spec.TaskTemplate
	labels := map[string]string{labelCollects: svc.ID, labelCollectsName: svc.Spec.Name}
	for k, v := range tmpl.ContainerSpec.Labels { // the job's and the daemon's
		labels[k] = v
	}
	one := uint64(1)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: labels},
		Mode:        swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:          tmpl.ContainerSpec.Image,
				Labels:         tmpl.ContainerSpec.Labels,
				Command:        []string{"/bin/sh", "-c", collectScript, "gantry-collect", dir},
				Mounts:         []mount.Mount{{Type: mount.TypeVolume, Source: vol, Target: dir}},
				CapabilityDrop: []string{"ALL"},
				Privileges:     &swarm.Privileges{NoNewPrivileges: true},
			},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionNone},
			Placement:     &swarm.Placement{Constraints: []string{"node.id==" + t.NodeID}},
			Networks:      tmpl.Networks,
			LogDriver:     logDriver(0), // all of it: it is the outputs
		},
	}
	opts := client.ServiceCreateOptions{Spec: spec}
	if b.auth != nil {
		auth, err := b.auth(tmpl.ContainerSpec.Image)
		if err != nil {
			return "", fmt.Errorf("registry credentials for %s: %w", tmpl.ContainerSpec.Image, err)
		}
		opts.EncodedRegistryAuth = auth
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.ServiceCreate(cctx, opts)
	if cerrdefs.IsConflict(err) || cerrdefs.IsAlreadyExists(err) {
		old, err := b.inspect(ctx, name)
		return old.ID, err
	}
	if err != nil {
		return "", fmt.Errorf("create the collector of %s: %w", svc.Spec.Name, err)
	}
	return res.ID, nil
}

// collectorName is the name of the collector of task of service name,
// within the 63 characters a service name may have.
func collectorName(name, task string) string {
	suffix := "-out-" + task[:min(10, len(task))]
	return name[:min(len(name), 63-len(suffix))] + suffix
}

// awaitCollector waits until collector id's task ends, and returns it.
func (b *Backend) awaitCollector(ctx context.Context, id string) (swarm.Task, error) {
	start := time.Now()
	for {
		t, ok, err := b.task(ctx, id)
		if err != nil {
			return swarm.Task{}, err
		}
		if ok && terminal(t.Status.State) {
			if t.Status.State != swarm.TaskStateComplete && t.Status.State != swarm.TaskStateFailed {
				b.removeSoon(ctx, id)
				return swarm.Task{}, fmt.Errorf("the collector of the outputs did not run: %s %s", t.Status.State, t.Status.Err)
			}
			return t, nil
		}
		if time.Since(start) > collectPending && (!ok || t.Status.State != swarm.TaskStateRunning) {
			b.removeSoon(ctx, id)
			return swarm.Task{}, fmt.Errorf("the collector of the outputs did not start in %s: %s", collectPending, t.Status.Err)
		}
		select {
		case <-ctx.Done():
			return swarm.Task{}, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// collectorErr is what collector id wrote to stderr (the end of it).
func (b *Backend) collectorErr(ctx context.Context, id string) string {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	logs, err := b.c.ServiceLogs(ctx, id, client.ServiceLogsOptions{ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer logs.Close()
	var stderr bytes.Buffer
	stdcopy.StdCopy(io.Discard, &stderr, logs)
	msg := strings.TrimSpace(stderr.String())
	return msg[max(0, len(msg)-500):]
}

// collected is the tar stream collector id wrote, decoded from its log.
func (b *Backend) collected(ctx context.Context, id string) (io.ReadCloser, error) {
	logs, err := b.c.ServiceLogs(ctx, id, client.ServiceLogsOptions{ShowStdout: true})
	if err != nil {
		return nil, fmt.Errorf("read the collector's log: %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		defer logs.Close()
		_, err := stdcopy.StdCopy(pw, io.Discard, logs)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		pw.CloseWithError(err)
	}()
	return &decoded{Reader: base64.NewDecoder(base64.StdEncoding, pr), pr: pr}, nil
}

// decoded is a stream decoded from a log; closing it ends the log's read.
type decoded struct {
	io.Reader
	pr *io.PipeReader
}

func (d *decoded) Close() error { return d.pr.Close() }

// removeSoon removes service id, even when ctx has ended.
func (b *Backend) removeSoon(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	b.remove(ctx, id)
}

// isNotFound says whether err from the manager means not found.
func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// gantryNotFound says whether err is of kind ErrNotFound.
func gantryNotFound(err error) bool { return errors.Is(err, gantry.ErrNotFound) }
