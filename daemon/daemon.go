// Package daemon is where gantry's parts meet: it keeps the queue, and runs
// each job's life top to bottom in this file: queue, build, run, gate, push.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/store"
	"github.com/gantry-ml/gantry/trainer"
)

// The subsets of the outside systems the pipeline uses, declared here where
// they are used; cmd/gantryd wires the real ones, tests may wire others.
type (
	jobStore interface {
		Create(ctx context.Context, j *gantry.Job) error
		Get(ctx context.Context, id string) (*gantry.Job, error)
		Update(ctx context.Context, id string, fn func(*gantry.Job) error) (*gantry.Job, error)
		List(ctx context.Context, o store.ListOptions) ([]*gantry.Job, string, error)
		Unfinished(ctx context.Context) ([]*gantry.Job, error)
	}
	imageBuilder interface {
		Build(ctx context.Context, r builder.Request, progress io.Writer) (string, error)
	}
	containerRunner interface {
		Create(ctx context.Context, s runner.Spec) (string, error)
		Run(ctx context.Context, id string, out io.Writer, stopTimeout time.Duration) (runner.Exit, error)
		Remove(ctx context.Context, id string) error
	}
	imagePusher interface {
		Push(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error)
	}
	// imageSource reads a local image (by name) for pushing.
	imageSource func(ctx context.Context, id string) (v1.Image, error)
)

// Config is the daemon's configuration.
type Config struct {
	// DataDir holds the logs and the unpacked build contexts.
	DataDir string
	// MaxJobs is how many jobs run at once.
	MaxJobs int
	// Context bounds submitted build contexts.
	Context Limits
	// StopTimeout is the grace period between SIGTERM and SIGKILL when a
	// training container is stopped.
	StopTimeout time.Duration
	Logger      *slog.Logger
}

// Daemon runs jobs.
type Daemon struct {
	cfg     Config
	store   jobStore
	builder imageBuilder
	runner  containerRunner
	pusher  imagePusher
	source  imageSource
	log     *slog.Logger
	now     func() time.Time

	wake chan struct{}
	mu   sync.Mutex
	busy map[string]bool // jobs this process is running
	wg   sync.WaitGroup
}

// New returns a daemon; Run starts its work.
func New(cfg Config, st jobStore, b imageBuilder, r containerRunner, p imagePusher, src imageSource) (*Daemon, error) {
	if cfg.MaxJobs < 1 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "max jobs %d: must be at least 1", cfg.MaxJobs)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, d := range []string{"logs", "contexts"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	return &Daemon{
		cfg: cfg, store: st, builder: b, runner: r, pusher: p, source: src,
		log: cfg.Logger, now: time.Now,
		wake: make(chan struct{}, 1),
		busy: map[string]bool{},
	}, nil
}

// Run schedules jobs until ctx ends, then waits for the jobs it started to
// stop. Jobs that a previous gantryd left unfinished are settled first.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.recoverJobs(ctx); err != nil {
		return err
	}
	d.poke()
	for {
		select {
		case <-ctx.Done():
			d.wg.Wait()
			return nil
		case <-d.wake:
			if err := d.schedule(ctx); err != nil {
				d.log.Error("schedule", "err", err)
			}
		}
	}
}

func (d *Daemon) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// schedule starts queued jobs, oldest first, while slots are free.
func (d *Daemon) schedule(ctx context.Context) error {
	jobs, err := d.store.Unfinished(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, j := range jobs {
		if len(d.busy) >= d.cfg.MaxJobs {
			return nil
		}
		if j.State != gantry.StateQueued || d.busy[j.ID] {
			continue
		}
		d.busy[j.ID] = true
		d.wg.Add(1)
		go func(id string) {
			defer d.wg.Done()
			d.runJob(ctx, id)
			d.mu.Lock()
			delete(d.busy, id)
			d.mu.Unlock()
			d.poke()
		}(j.ID)
	}
	return nil
}

// recoverJobs settles jobs that were under way when a previous gantryd
// stopped: queued jobs stay queued; a job caught mid-way ends failed with
// the reason, and what it left in the engine is removed.
func (d *Daemon) recoverJobs(ctx context.Context) error {
	jobs, err := d.store.Unfinished(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, j := range jobs {
		if j.State == gantry.StateQueued {
			continue
		}
		was := j.State
		j, err := d.finish(ctx, j.ID, gantry.StateFailed, fmt.Sprintf("gantryd stopped while the job was %s", was))
		if err != nil {
			return fmt.Errorf("recover job: %w", err)
		}
		d.cleanup(ctx, j)
	}
	return nil
}

// Submit records a new job for spec, with the build context read from tar.
// It returns ErrInvalid for a bad spec or context and ErrTooLarge for a
// context over the limits; nothing of a refused submission is kept.
func (d *Daemon) Submit(ctx context.Context, spec gantry.Spec, tar io.Reader) (*gantry.Job, error) {
	if err := spec.Validate(validRef, validRegex); err != nil {
		return nil, err
	}
	j := gantry.NewJob(spec, d.now())
	dir := d.contextDir(j.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	size, err := unpack(tar, dir, d.cfg.Context)
	if err == nil {
		err = checkDockerfile(dir, spec.Build.Dockerfile)
	}
	if err == nil {
		j.ContextSize = size
		err = d.store.Create(ctx, j)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.log.Info("job submitted", "job", j.ID, "context_bytes", size)
	d.poke()
	return j, nil
}

func checkDockerfile(dir, name string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	fi, err := root.Stat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return gantry.Errorf(gantry.ErrInvalid, "build context has no Dockerfile at %q (give its path with -f)", name)
	}
	return nil
}

// Get returns the job id. It returns ErrNotFound.
func (d *Daemon) Get(ctx context.Context, id string) (*gantry.Job, error) {
	return d.store.Get(ctx, id)
}

// List returns a page of jobs, newest first.
func (d *Daemon) List(ctx context.Context, o store.ListOptions) ([]*gantry.Job, string, error) {
	return d.store.List(ctx, o)
}

func (d *Daemon) contextDir(id string) string { return filepath.Join(d.cfg.DataDir, "contexts", id) }

// LogPath is where job id's log lives: the build output, the training
// output and the push progress, in that order.
func (d *Daemon) LogPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "logs", id+".log")
}

// runJob is one job's life: build, run, gate, push. Each step's outcome is
// committed to the store before the next side effect starts.
func (d *Daemon) runJob(ctx context.Context, id string) {
	logf, err := os.OpenFile(d.LogPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.finish(ctx, id, gantry.StateFailed, fmt.Sprintf("open job log: %v", err))
		return
	}
	defer logf.Close()
	say := func(format string, args ...any) { fmt.Fprintf(logf, "==> "+format+"\n", args...) }

	j, err := d.move(ctx, id, gantry.StateBuilding, nil)
	if err != nil {
		d.log.Error("start job", "job", id, "err", err)
		return
	}
	d.log.Info("job building", "job", id)

	// Build.
	say("building %s (Dockerfile %s)", j.ImageName, j.Spec.Build.Dockerfile)
	imageID, err := d.builder.Build(ctx, builder.Request{
		ContextDir: d.contextDir(id),
		Spec:       j.Spec.Build,
		Name:       j.ImageName,
		Labels:     map[string]string{runner.LabelJob: id},
	}, logf)
	os.RemoveAll(d.contextDir(id))
	if err != nil {
		d.fail(ctx, id, logf, err)
		return
	}
	say("built image %s", imageID)

	// Run: the container's ID is recorded before it starts.
	cid, err := d.runner.Create(ctx, runner.Spec{
		Image:  imageID,
		Name:   "gantry-" + id,
		Labels: map[string]string{runner.LabelJob: id},
	})
	if err != nil {
		d.fail(ctx, id, logf, err)
		return
	}
	j, err = d.move(ctx, id, gantry.StateRunning, func(j *gantry.Job) {
		j.Image = imageID
		j.ContainerID = cid
	})
	if err != nil {
		d.runner.Remove(context.WithoutCancel(ctx), cid)
		return
	}
	say("training in container %.12s", cid)
	pattern, err := trainer.Compile(j.Spec.MetricRegex)
	if err != nil { // validated at submission; a record from elsewhere may differ
		d.fail(ctx, id, logf, err)
		return
	}
	metrics := pattern.NewReader()
	lines := newLineSplitter(metrics.Line)
	exit, err := d.runner.Run(ctx, cid, io.MultiWriter(logf, lines), d.cfg.StopTimeout)
	lines.Flush()
	if err != nil {
		d.fail(ctx, id, logf, err)
		d.runner.Remove(context.WithoutCancel(ctx), cid)
		return
	}
	acc, accErr := metrics.Accuracy()
	j, err = d.store.Update(ctx, id, func(j *gantry.Job) error {
		code := exit.Code
		j.ExitCode = &code
		if accErr == nil {
			j.Metrics.Accuracy = &acc
		}
		return nil
	})
	if err != nil {
		d.log.Error("record exit", "job", id, "err", err)
		return
	}
	// The record is complete: the container can go.
	if err := d.runner.Remove(context.WithoutCancel(ctx), cid); err != nil {
		d.log.Warn("remove container", "job", id, "err", err)
	}

	// Gate.
	if exit.OOMKilled {
		d.fail(ctx, id, logf, fmt.Errorf("training was killed: out of memory (OOMKilled)"))
		return
	}
	if exit.Code != 0 {
		d.fail(ctx, id, logf, fmt.Errorf("training exited with code %d", exit.Code))
		return
	}
	if accErr == nil {
		say("accuracy %.4f", acc)
	} else {
		say("accuracy: %v", accErr)
	}
	if reason := gate(j.Spec.MinAccuracy, acc, accErr); reason != "" {
		say("rejected: %s", reason)
		d.finish(ctx, id, gantry.StateRejected, reason)
		return
	}
	if len(j.Spec.Push) == 0 {
		say("succeeded")
		d.finish(ctx, id, gantry.StateSucceeded, "")
		return
	}

	// Push.
	if _, err := d.move(ctx, id, gantry.StatePushing, nil); err != nil {
		return
	}
	say("pushing to %v", j.Spec.Push)
	img, err := d.source(ctx, j.ImageName)
	if err != nil {
		d.fail(ctx, id, logf, err)
		return
	}
	pushes, err := d.pusher.Push(ctx, img, j.Spec.Push, logf)
	if err != nil {
		d.fail(ctx, id, logf, err)
		return
	}
	if _, err := d.store.Update(ctx, id, func(j *gantry.Job) error {
		j.Pushes = pushes
		return nil
	}); err != nil {
		d.log.Error("record pushes", "job", id, "err", err)
		return
	}
	say("succeeded")
	d.finish(ctx, id, gantry.StateSucceeded, "")
}

// gate says why a job that trained with exit 0 must not be pushed, or ""
// when it passes.
func gate(min *float64, acc float64, accErr error) string {
	if min == nil {
		return ""
	}
	if accErr != nil {
		return fmt.Sprintf("the gate needs accuracy >= %g, but %v", *min, accErr)
	}
	if acc < *min {
		return fmt.Sprintf("accuracy %.4f is below the gate %g", acc, *min)
	}
	return ""
}

// move commits job id's move to state to, with edit applied in the same
// transaction.
func (d *Daemon) move(ctx context.Context, id string, to gantry.State, edit func(*gantry.Job)) (*gantry.Job, error) {
	j, err := d.store.Update(context.WithoutCancel(ctx), id, func(j *gantry.Job) error {
		if edit != nil {
			edit(j)
		}
		return j.Move(to, d.now())
	})
	if err != nil {
		d.log.Error("move job", "job", id, "to", to, "err", err)
	}
	return j, err
}

// finish ends job id in a terminal state with the reason. It is committed
// even when ctx is cancelled: a job that stops must say how.
func (d *Daemon) finish(ctx context.Context, id string, to gantry.State, reason string) (*gantry.Job, error) {
	j, err := d.move(ctx, id, to, func(j *gantry.Job) { j.Error = reason })
	if err == nil {
		d.log.Info("job "+string(to), "job", id, "reason", reason)
	}
	return j, err
}

// fail ends job id as failed (or canceled, when ctx was) with err's message,
// which is also the log's last line.
func (d *Daemon) fail(ctx context.Context, id string, logf io.Writer, err error) {
	state, msg := gantry.StateFailed, err.Error()
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		msg = "interrupted: gantryd shut down while the job ran"
	}
	fmt.Fprintf(logf, "==> %s: %s\n", state, msg)
	d.finish(ctx, id, state, msg)
}

// cleanup removes what a job left in the engine.
func (d *Daemon) cleanup(ctx context.Context, j *gantry.Job) {
	if j.ContainerID != "" {
		if err := d.runner.Remove(context.WithoutCancel(ctx), j.ContainerID); err != nil {
			d.log.Warn("remove container", "job", j.ID, "err", err)
		}
	}
	os.RemoveAll(d.contextDir(j.ID))
}
