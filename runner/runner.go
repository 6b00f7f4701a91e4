// Package runner runs training containers on the Docker Engine. It is the one
// place gantry talks to the engine's container API; the API version is always
// negotiated, so it works from Debian's engine 20.10 (API 1.41) to current
// engines that refuse old versions.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// LabelJob is the label that carries the job ID on every container and
// image gantry creates, so they can be found after a crash.
const LabelJob = "io.gantry.job"

// callTimeout bounds every non-streaming call to the engine.
const callTimeout = 30 * time.Second

// Engine is a connection to a Docker engine.
type Engine struct {
	c *client.Client
}

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
	return &Engine{c: c}, nil
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
}

// Create creates the container for s and returns its ID. The container is
// not started: the caller records the ID first, then calls Run.
func (e *Engine) Create(ctx context.Context, s Spec) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       s.Name,
		Config:     &container.Config{Image: s.Image, Labels: s.Labels},
		HostConfig: &container.HostConfig{},
	})
	if err != nil {
		return "", fmt.Errorf("create container: %w", err)
	}
	return res.ID, nil
}

// Exit is how a container ended.
type Exit struct {
	Code      int
	OOMKilled bool
}

// Run starts container id (unless it already ran), copies its stdout and
// stderr to out as they arrive, and returns how it exited once its output is
// drained. When ctx is cancelled the container is stopped (SIGTERM, then
// SIGKILL after stopTimeout) and ctx's error is returned.
func (e *Engine) Run(ctx context.Context, id string, out io.Writer, stopTimeout time.Duration) (Exit, error) {
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
	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	wait := e.c.ContainerWait(waitCtx, id, client.ContainerWaitOptions{Condition: cond})
	if fresh {
		sctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := e.c.ContainerStart(sctx, id, client.ContainerStartOptions{})
		cancel()
		if err != nil {
			return Exit{}, fmt.Errorf("start container: %w", err)
		}
	}

	logs, err := e.c.ContainerLogs(waitCtx, id, client.ContainerLogsOptions{
		ShowStdout: true, ShowStderr: true, Follow: true,
	})
	if err != nil {
		return Exit{}, fmt.Errorf("follow container logs: %w", err)
	}
	copied := make(chan error, 1)
	go func() {
		defer logs.Close()
		_, err := stdcopy.StdCopy(out, out, logs)
		copied <- err
	}()

	select {
	case <-ctx.Done():
		e.stop(id, stopTimeout)
		// The log stream ends when the container does; keep what it said.
		select {
		case <-copied:
		case <-time.After(stopTimeout + 10*time.Second):
		}
		return Exit{}, ctx.Err()
	case err := <-wait.Error:
		return Exit{}, fmt.Errorf("wait for container: %w", err)
	case res := <-wait.Result:
		if err := <-copied; err != nil && !errors.Is(err, io.EOF) {
			return Exit{}, fmt.Errorf("container logs: %w", err)
		}
		exit := Exit{Code: int(res.StatusCode)}
		if insp, err := e.inspect(context.WithoutCancel(ctx), id); err == nil {
			exit.OOMKilled = insp.State.OOMKilled
		}
		return exit, nil
	}
}

func (e *Engine) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return container.InspectResponse{}, gantry.Errorf(gantry.ErrNotFound, "container %s: no longer exists", id)
		}
		return container.InspectResponse{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return res.Container, nil
}

func (e *Engine) stop(id string, grace time.Duration) {
	secs := int(grace.Seconds())
	ctx, cancel := context.WithTimeout(context.Background(), grace+callTimeout)
	defer cancel()
	_, _ = e.c.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs})
}

// Remove removes container id, stopping it first if it runs. A container
// that is already gone is not an error.
func (e *Engine) Remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := e.c.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}
