package swarm

// Running a service's one task: start it, watch where it lands, follow its
// output, and tell how it ended (or that the swarm lost it).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/iox"
	"github.com/gantry-ml/gantry/runner"
)

// pollInterval is how often Run looks at a task. Engine 20.10 has no event
// stream of task changes (task events came with API 1.45, and only as
// "updated"), so the task list is polled; nodeEvery is how often the task's
// node is looked at.
const (
	pollInterval = 200 * time.Millisecond
	nodeEvery    = time.Second
	// drainTimeout bounds the last read of an ended task's log.
	drainTimeout = 5 * time.Minute
)

// Run scales service id to its one task unless it was started, follows the
// task's output to out from the start, and returns how it ended once its
// output is drained: every byte of the log is written once per Run (a Run
// after a restart replays it from the start; the caller skips what it
// holds). watch is told where the task is placed, or why it waits, each
// time that changes. A task whose node goes down, or that the swarm
// orphans, ends with Exit.Lost; one the swarm rejected (its image could not
// be pulled) is an error with the swarm's reason. When ctx ends, Run returns
// ctx's error and leaves the service as it is. When the manager stops
// answering, Run returns an error of kind ErrUnavailable (see State).
func (b *Backend) Run(ctx context.Context, id string, out io.Writer, watch runner.Watch) (runner.Exit, error) {
	svc, err := b.inspect(ctx, id)
	if err != nil {
		return runner.Exit{}, err
	}
	if svc.Spec.Labels[labelStarted] == "" {
		if err := b.scale(ctx, svc, 1); err != nil {
			return runner.Exit{}, err
		}
	}
	cw := &counter{w: out}
	f := &follower{b: b, id: svc.ID, out: cw}
	defer f.stop()
	exit, err := b.await(ctx, svc, watch, func() { f.start(ctx) })
	f.stop()
	if err != nil || exit.Lost != "" {
		return exit, err
	}
	if err := b.drain(ctx, svc.ID, &iox.SkipWriter{W: out, Skip: cw.n}); err != nil {
		return runner.Exit{}, err
	}
	return exit, nil
}

// await polls service svc's task until it ends, telling watch where it is,
// and calls running once the task runs (or has ended).
func (b *Backend) await(ctx context.Context, svc swarm.Service, watch runner.Watch, running func()) (runner.Exit, error) {
	var last gantry.Placement
	hosts := map[string]string{} // node ID: hostname
	var nodeSeen time.Time
	for {
		t, ok, err := b.task(ctx, svc.ID)
		if err != nil {
			return runner.Exit{}, b.lost(ctx, err)
		}
		if !ok {
			// No task: the swarm has not made it yet, or a stopped
			// service's task is gone.
			if svc, err = b.inspect(ctx, svc.ID); err != nil {
				return runner.Exit{}, err
			}
			if replicas(svc) == 0 {
				return runner.Exit{Code: 137}, nil
			}
		} else {
			if t.NodeID != "" && hosts[t.NodeID] == "" {
				hosts[t.NodeID] = b.hostname(ctx, t.NodeID)
			}
			if p := placement(svc, t, hosts[t.NodeID]); p != last {
				last = p
				if watch != nil {
					watch(p)
				}
			}
			if t.Status.State == swarm.TaskStateRunning || terminal(t.Status.State) {
				running()
			}
			if terminal(t.Status.State) {
				return ended(svc, t, hosts[t.NodeID])
			}
			if t.NodeID != "" && time.Since(nodeSeen) >= nodeEvery {
				nodeSeen = time.Now()
				if b.nodeDown(ctx, t.NodeID) {
					return runner.Exit{Lost: fmt.Sprintf("node %s (%s) is down", hosts[t.NodeID], t.NodeID)}, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return runner.Exit{}, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// placement is where task t of svc is: its node, or why it waits for one.
func placement(svc swarm.Service, t swarm.Task, host string) gantry.Placement {
	p := gantry.Placement{Backend: gantry.BackendSwarm, Service: svc.Spec.Name, Task: t.ID, NodeID: t.NodeID, Node: host}
	if t.NodeID == "" && !terminal(t.Status.State) {
		p.Waiting = t.Status.Err
		if p.Waiting == "" {
			p.Waiting = t.Status.Message
		}
	}
	return p
}

// ended is how task t ended.
func ended(svc swarm.Service, t swarm.Task, host string) (runner.Exit, error) {
	st := t.Status
	switch st.State {
	case swarm.TaskStateRejected:
		return runner.Exit{}, fmt.Errorf("the swarm rejected the task on node %s: %s", host, st.Err)
	case swarm.TaskStateOrphaned:
		return runner.Exit{Lost: fmt.Sprintf("the task was orphaned on node %s (%s): %s", host, t.NodeID, st.Err)}, nil
	case swarm.TaskStateFailed:
		if st.ContainerStatus == nil || st.ContainerStatus.ExitCode == 0 {
			// It never ran: the container could not be made or started.
			return runner.Exit{}, fmt.Errorf("the task failed on node %s: %s", host, st.Err)
		}
	}
	code := exitCode(t)
	exit := runner.Exit{Code: code}
	// A task the swarm stopped (Stop) ends shut down, one killed by the
	// kernel failed.
	r := svc.Spec.TaskTemplate.Resources
	if code == 137 && st.State == swarm.TaskStateFailed && r != nil && r.Limits != nil && r.Limits.MemoryBytes > 0 {
		exit.OOMProbable = true
	}
	return exit, nil
}

// hostname is node id's hostname ("" when the manager does not say).
func (b *Backend) hostname(ctx context.Context, id string) string {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.NodeInspect(ctx, id, client.NodeInspectOptions{})
	if err != nil {
		return ""
	}
	return res.Node.Description.Hostname
}

// nodeDown says whether the manager marks node id down (or no longer
// knows it). An error of the manager's is not taken for a node down.
func (b *Backend) nodeDown(ctx context.Context, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := b.c.NodeInspect(ctx, id, client.NodeInspectOptions{})
	if err != nil {
		return isNotFound(err)
	}
	return res.Node.Status.State == swarm.NodeStateDown
}

// lost classifies an error from the manager: with ctx still live it means
// the manager went away (ErrUnavailable).
func (b *Backend) lost(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %w", gantry.ErrUnavailable, err)
}

// drain writes service id's log, read once to its end, to out.
func (b *Backend) drain(ctx context.Context, id string, out io.Writer) error {
	dctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	logs, err := b.c.ServiceLogs(dctx, id, client.ServiceLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return b.lost(ctx, fmt.Errorf("read the service's log: %w", err))
	}
	defer logs.Close()
	if _, err := stdcopy.StdCopy(out, out, logs); err != nil && !errors.Is(err, io.EOF) {
		return b.lost(ctx, fmt.Errorf("read the service's log: %w", err))
	}
	return nil
}

// follower follows a service's log (multiplexed, as the task has no TTY)
// to out from when start is first called until stop. A followed service log
// does not end when the task does: stop ends it.
type follower struct {
	b      *Backend
	id     string
	out    io.Writer
	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *follower) start(ctx context.Context) {
	f.once.Do(func() {
		ctx, cancel := context.WithCancel(ctx)
		f.cancel, f.done = cancel, make(chan struct{})
		go func() {
			defer close(f.done)
			logs, err := f.b.c.ServiceLogs(ctx, f.id, client.ServiceLogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
			if err != nil {
				return // the drain reads it all
			}
			defer logs.Close()
			stdcopy.StdCopy(f.out, f.out, logs)
		}()
	})
}

// stop ends the stream and waits until nothing more is written.
func (f *follower) stop() {
	f.once.Do(func() {}) // never starts after a stop
	if f.cancel != nil {
		f.cancel()
		<-f.done
	}
}

// counter counts the bytes written through it.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
