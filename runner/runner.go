// Package runner runs training containers on the Docker Engine. It is the one
// place gantry talks to the engine's container API; the API version is always
// negotiated, so it works from Debian's engine 20.10 (API 1.41) to current
// engines that refuse old versions.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// The labels on every container and image gantry creates, so they can be
// found after a crash: the job's ID, and the instance ID of the gantryd
// (its data file) that owns the job.
const (
	LabelJob    = "io.gantry.job"
	LabelDaemon = "io.gantry.daemon"
)

// callTimeout bounds every non-streaming call to the engine.
const callTimeout = 30 * time.Second

// Engine is a connection to a Docker engine.
type Engine struct {
	c *client.Client
	// host is the engine's hostname: the node jobs run on.
	host string
}

// Name is the backend's name: local.
func (e *Engine) Name() string { return gantry.BackendLocal }

// Dial connects to the engine at host ("" means DOCKER_HOST, else the local
// socket) and negotiates the API version. It returns ErrUnavailable when the
// engine does not answer.
func Dial(ctx context.Context, host string) (*Engine, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "docker host %q: %v", host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		c.Close()
		return nil, gantry.Errorf(gantry.ErrUnavailable,
			"docker engine at %s does not answer (is dockerd running? set --docker-host or DOCKER_HOST): %v", c.DaemonHost(), err)
	}
	e := &Engine{c: c}
	if res, err := c.Info(ctx, client.InfoOptions{}); err == nil {
		e.host = res.Info.Name
	}
	return e, nil
}

// Close closes the connection.
func (e *Engine) Close() error { return e.c.Close() }

// Client is the engine's API client, for packages (the push step) that read
// images from the engine through go-containerregistry.
func (e *Engine) Client() *client.Client { return e.c }

// Version returns the engine's version and negotiated API version.
func (e *Engine) Version(ctx context.Context) (engine, api string, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	v, err := e.c.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "", "", fmt.Errorf("engine version: %w", err)
	}
	return v.Version, e.c.ClientVersion(), nil
}

// Storage returns the engine's data root and storage driver (docker info).
func (e *Engine) Storage(ctx context.Context) (root, driver string, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", "", fmt.Errorf("engine info: %w", err)
	}
	return res.Info.DockerRootDir, res.Info.Driver, nil
}

// Hijack opens a hijacked connection to an engine endpoint; the embedded
// BuildKit is reached this way.
func (e *Engine) Hijack(ctx context.Context, url, proto string, meta map[string][]string) (net.Conn, error) {
	return e.c.DialHijack(ctx, url, proto, meta)
}

// Load loads an image tarball into the engine.
func (e *Engine) Load(ctx context.Context, r io.Reader) error {
	res, err := e.c.ImageLoad(ctx, r, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("image load: %w", err)
	}
	defer res.Close()
	_, err = io.Copy(io.Discard, res)
	return err
}

// ImageID returns the ID of the local image ref. It returns ErrNotFound when
// the engine has no such image.
func (e *Engine) ImageID(ctx context.Context, ref string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ImageInspect(ctx, ref)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", gantry.Errorf(gantry.ErrNotFound, "image %s: not in the engine", ref)
		}
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return res.ID, nil
}

// Spec describes a training container.
type Spec struct {
	Image  string
	Name   string
	Labels map[string]string
	// Memory (bytes), NanoCPUs (CPUs x 1e9) and PidsLimit; zero is no limit.
	Memory    int64
	NanoCPUs  int64
	PidsLimit int64
	// Network is the network to join; "" means none.
	Network string
	// CapAdd lists the capabilities kept; all others are dropped.
	CapAdd []string
	// LogBytes bounds the engine's own log of the container (zero: the
	// engine's default, which may be unbounded).
	LogBytes int64
	// Cmd, when set, replaces the image's command; Env holds KEY=VALUE
	// pairs added to the image's environment.
	Cmd []string
	Env []string
	// Mounts are mounted read-only: host paths (already checked against
	// the policy) and named volumes.
	Mounts []Mount
	// GPUs, when Count or DeviceIDs is set, asks the engine for GPUs as
	// docker run --gpus does.
	GPUs gantry.GPURequest
	// ShmSize is /dev/shm's size in bytes (zero: the engine's default).
	ShmSize int64
	// Constraints place the run on a cluster's nodes (swarm placement
	// constraints, "node.labels.pool==train"); the local backend refuses
	// any.
	Constraints []string
	// StopGrace is the grace between SIGTERM and SIGKILL when the run is
	// stopped, for backends that fix it when the run is created.
	StopGrace time.Duration
}

// Mount is a read-only mount of a host path or a named volume.
type Mount struct {
	Source, Target string
	Volume         bool
}

// hostMounts are m as the engine takes them: read-only, and a volume is
// never filled from the image.
func hostMounts(ms []Mount) []mount.Mount {
	var out []mount.Mount
	for _, m := range ms {
		hm := mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: true}
		if m.Volume {
			hm.Type, hm.VolumeOptions = mount.TypeVolume, &mount.VolumeOptions{NoCopy: true}
		}
		out = append(out, hm)
	}
	return out
}

// deviceRequests is g as the engine takes it (docker run --gpus's shape).
func deviceRequests(g gantry.GPURequest) []container.DeviceRequest {
	if g.Count == 0 && len(g.DeviceIDs) == 0 {
		return nil
	}
	return []container.DeviceRequest{{Count: g.Count, DeviceIDs: g.DeviceIDs, Capabilities: [][]string{{"gpu"}}}}
}

// logConfig is the engine's log of a container: json-file, which can be read
// back, holding at most one file of max bytes (it is emptied when full).
func logConfig(max int64) container.LogConfig {
	if max <= 0 {
		return container.LogConfig{Type: "json-file"}
	}
	return container.LogConfig{Type: "json-file", Config: map[string]string{
		"max-size": strconv.FormatInt(max, 10), "max-file": "1",
	}}
}

// Create creates the container for s and returns its ID. The container is
// not started: the caller records the ID first, then calls Run.
func (e *Engine) Create(ctx context.Context, s Spec) (string, error) {
	if len(s.Constraints) > 0 {
		return "", gantry.Errorf(gantry.ErrInvalid, "placement constraints %q: the local backend runs on one engine (gantryd --backend swarm places jobs)", s.Constraints)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// Least privilege: no network unless asked, every capability dropped
	// but those asked for, no gaining privileges through setuid binaries,
	// and nothing of the host mounted.
	network := s.Network
	if network == "" {
		network = "none"
	}
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(network),
		CapDrop:     []string{"ALL"},
		CapAdd:      s.CapAdd,
		SecurityOpt: []string{"no-new-privileges"},
		LogConfig:   logConfig(s.LogBytes),
		Mounts:      hostMounts(s.Mounts),
		ShmSize:     s.ShmSize,
	}
	if m, ok := e.outputMount(ctx, s); ok {
		hc.Mounts = append(hc.Mounts, m)
	}
	hc.DeviceRequests = deviceRequests(s.GPUs)
	hc.Memory = s.Memory
	hc.NanoCPUs = s.NanoCPUs
	if s.PidsLimit > 0 {
		hc.PidsLimit = &s.PidsLimit
	}
	res, err := e.c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       s.Name,
		Config:     &container.Config{Image: s.Image, Labels: s.Labels, Cmd: s.Cmd, Env: s.Env},
		HostConfig: hc,
	})
	if err != nil {
		if cerrdefs.IsInvalidArgument(err) {
			return "", gantry.Errorf(gantry.ErrInvalid, "create container: %v", err)
		}
		return "", fmt.Errorf("create container: %w", err)
	}
	return res.ID, nil
}

// Run starts container id unless it already ran, copies its stdout and
// stderr to out from the start of its log as they arrive, and returns how it
// exited once its output is drained. A container that ran (or exited) while
// nobody followed it has its log replayed from the start; the caller skips
// what it already holds. When ctx ends, Run returns ctx's error and leaves
// the container as it is: stopping it is the caller's decision (Stop). When
// the connection to the engine breaks, Run returns an error of kind
// ErrUnavailable: the container may have survived (see State).
func (e *Engine) Run(ctx context.Context, id string, out io.Writer, watch Watch) (Exit, error) {
	insp, err := e.inspect(ctx, id)
	if err != nil {
		return Exit{}, err
	}
	fresh := insp.State.Status == container.StateCreated
	// Register the wait before starting, so the exit cannot be missed. For a
	// container that already ran, next-exit would block forever.
	cond := container.WaitConditionNotRunning
	if fresh {
		cond = container.WaitConditionNextExit
	}
	wctx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	wait := e.c.ContainerWait(wctx, id, client.ContainerWaitOptions{Condition: cond})
	if fresh {
		sctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := e.c.ContainerStart(sctx, id, client.ContainerStartOptions{})
		cancel()
		if err != nil {
			return Exit{}, e.startError(ctx, id, err)
		}
	}
	if watch != nil {
		watch(gantry.Placement{Backend: gantry.BackendLocal, Node: e.host})
	}

	logs, err := e.c.ContainerLogs(wctx, id, client.ContainerLogsOptions{
		ShowStdout: true, ShowStderr: true, Follow: true,
	})
	if err != nil {
		return Exit{}, e.lost(ctx, fmt.Errorf("follow container logs: %w", err))
	}
	copied := make(chan error, 1)
	go func() {
		defer logs.Close()
		_, err := stdcopy.StdCopy(out, out, logs)
		copied <- err
	}()

	var res container.WaitResponse
	select {
	case <-ctx.Done():
		stopWait()
		<-copied
		return Exit{}, ctx.Err()
	case err := <-wait.Error:
		stopWait()
		<-copied
		return Exit{}, e.lost(ctx, fmt.Errorf("wait for container: %w", err))
	case res = <-wait.Result:
	}
	// The log stream ends when the container does; a broken stream means
	// the engine went away mid-way.
	if err := <-copied; err != nil && !errors.Is(err, io.EOF) {
		return Exit{}, e.lost(ctx, fmt.Errorf("container logs: %w", err))
	}
	exit := Exit{Code: int(res.StatusCode)}
	insp, err = e.inspect(ctx, id)
	if err == nil {
		exit.OOMKilled = insp.State.OOMKilled
		if exit.Code == 137 && !exit.OOMKilled {
			exit.OOMKilled = e.oomEvent(ctx, id, insp.State.StartedAt)
		}
	}
	return exit, nil
}

// oomGrace bounds how long a SIGKILLed container's exit waits for the OOM
// event the engine may handle after the exit.
const oomGrace = 2 * time.Second

// oomEvent reports whether the engine has an "oom" event of container id
// since it started (RFC 3339): the engine can report the exit of a container
// the kernel killed before it has handled the OOM that killed it, so the
// event may come after the exit. The engine's event stream replays what
// came since started and sends what comes next: it is woken by the event,
// and waits oomGrace for one at most.
func (e *Engine) oomEvent(ctx context.Context, id, started string) bool {
	ctx, cancel := context.WithTimeout(ctx, oomGrace)
	defer cancel()
	f := client.Filters{}.Add("type", "container").Add("container", id).Add("event", "oom")
	evs := e.c.Events(ctx, client.EventsListOptions{Since: started, Filters: f})
	select {
	case <-evs.Messages:
		return true
	case <-evs.Err:
		return false
	case <-ctx.Done():
		return false
	}
}

// startError is why container id did not start (err, the engine's reason).
// When the container asked for devices (GPUs), it says what the engine holds
// of that request, as docker inspect shows it: an engine without a GPU
// runtime refuses at start, and the user sees what was asked.
func (e *Engine) startError(ctx context.Context, id string, err error) error {
	if insp, ierr := e.inspect(ctx, id); ierr == nil && insp.HostConfig != nil && len(insp.HostConfig.DeviceRequests) > 0 {
		if asked, jerr := json.Marshal(insp.HostConfig.DeviceRequests); jerr == nil {
			return fmt.Errorf("start container: %w (the container's device requests, as the engine holds them: %s)", err, asked)
		}
	}
	return fmt.Errorf("start container: %w", err)
}

// Volume is a named volume as the engine knows it.
type Volume struct {
	Name string
	// Mountpoint is its data directory on the engine's host; "" when the
	// engine is not reached through a unix socket (the directory would be
	// on another host).
	Mountpoint string
}

// Volume returns the named volume. It returns ErrNotFound when the engine
// has no such volume.
func (e *Engine) Volume(ctx context.Context, name string) (Volume, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Volume{}, gantry.Errorf(gantry.ErrNotFound, "no such volume %s: create it with docker volume create %s", name, name)
		}
		return Volume{}, fmt.Errorf("inspect volume %s: %w", name, err)
	}
	v := Volume{Name: res.Volume.Name}
	if strings.HasPrefix(e.c.DaemonHost(), "unix://") {
		v.Mountpoint = res.Volume.Mountpoint
	}
	return v, nil
}

// lost classifies an error from a stream to the engine: with ctx still live
// it means the engine went away (ErrUnavailable).
func (e *Engine) lost(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %w", gantry.ErrUnavailable, err)
}

// State is what the engine knows of a container now.
type State struct {
	Running   bool
	ExitCode  int
	OOMKilled bool
	// FinishedAt is when it last exited; zero while it runs.
	FinishedAt time.Time
}

// State returns container id's state. It returns ErrNotFound when the
// container is gone.
func (e *Engine) State(ctx context.Context, id string) (State, error) {
	insp, err := e.inspect(ctx, id)
	if err != nil {
		return State{}, err
	}
	st := State{Running: insp.State.Running || insp.State.Restarting, ExitCode: insp.State.ExitCode, OOMKilled: insp.State.OOMKilled}
	if t, err := time.Parse(time.RFC3339Nano, insp.State.FinishedAt); err == nil && !st.Running && t.Year() > 1 {
		st.FinishedAt = t
	}
	return st, nil
}

// Ping reports whether the engine answers.
func (e *Engine) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := e.c.Ping(ctx, client.PingOptions{})
	return err
}

func (e *Engine) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return container.InspectResponse{}, gantry.Errorf(gantry.ErrNotFound, "container %.12s: no longer exists", id)
		}
		return container.InspectResponse{}, fmt.Errorf("inspect container %.12s: %w", id, err)
	}
	return res.Container, nil
}

// Stop stops container id: SIGTERM, then SIGKILL after grace. A container
// that is gone or already stopped is not an error.
func (e *Engine) Stop(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace.Seconds())
	ctx, cancel := context.WithTimeout(ctx, grace+callTimeout)
	defer cancel()
	_, err := e.c.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %.12s: %w", id, err)
	}
	return nil
}

// Remove removes container id (an ID or a name) with its anonymous volumes
// (an image's VOLUME lines make one each), killing it first if it
// runs. A container that is already gone is not an error.
func (e *Engine) Remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := e.c.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %.12s: %w", id, err)
	}
	return nil
}

// RemoveImage removes the local image ref. An image that is gone is not an
// error.
func (e *Engine) RemoveImage(ctx context.Context, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := e.c.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// Container is one container gantry created, as the engine lists it.
type Container struct {
	ID      string
	Labels  map[string]string
	Created time.Time
}

// Containers lists every container (running or not) that carries all the
// given labels.
func (e *Engine) Containers(ctx context.Context, labels map[string]string) ([]Container, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	f := client.Filters{}
	for k, v := range labels {
		f = f.Add("label", k+"="+v)
	}
	res, err := e.c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]Container, 0, len(res.Items))
	for _, c := range res.Items {
		out = append(out, Container{ID: c.ID, Labels: c.Labels, Created: time.Unix(c.Created, 0)})
	}
	return out, nil
}

// Nodes lists the one machine the local backend runs on: the engine, as
// docker info shows it.
func (e *Engine) Nodes(ctx context.Context) ([]gantry.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, e.lost(ctx, fmt.Errorf("engine info: %w", err))
	}
	i := res.Info
	return []gantry.Node{{
		ID: i.ID, Hostname: i.Name, Role: "engine", State: "ready", Availability: "active",
		Labels: engineLabels(i.Labels), CPUs: float64(i.NCPU), Memory: i.MemTotal,
	}}, nil
}

// engineLabels are the engine's labels (KEY=VALUE) as a map.
func engineLabels(kvs []string) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}
