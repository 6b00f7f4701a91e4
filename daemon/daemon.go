// Package daemon is where gantry's parts meet: it keeps the queue, and runs
// each job's life top to bottom in this file: queue, build, run, gate, push.
//
// Every step commits its outcome to the store before the next side effect
// starts, so a gantryd killed at any moment finds, when it starts again,
// enough in the record to go on from where the job was: a build is run again,
// a training container is re-attached (its log replayed from the start, the
// job log cut back to where training began), a push is redone.
package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/internal/iox"
	"github.com/gantry-ml/gantry/internal/joblog"
	"github.com/gantry-ml/gantry/internal/keyed"
	"github.com/gantry-ml/gantry/layers"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/trainer"
)

// The subsets of the outside systems the pipeline uses, declared here where
// they are used; cmd/gantryd wires the real ones, tests may wire others.
type (
	jobStore interface {
		Create(ctx context.Context, j *gantry.Job) error
		Get(ctx context.Context, id string) (*gantry.Job, error)
		Update(ctx context.Context, id string, fn func(*gantry.Job) error) (*gantry.Job, error)
		List(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error)
		Unfinished(ctx context.Context) ([]*gantry.Job, error)
		Events(ctx context.Context, after uint64, job string, limit int) ([]gantry.Event, error)
		LastEvent(ctx context.Context) (uint64, error)
	}
	imageBuilder interface {
		Build(ctx context.Context, r builder.Request, progress io.Writer) (string, error)
	}
	// containerRunner is the subset of the engine that runs training.
	containerRunner interface {
		Create(ctx context.Context, s runner.Spec) (string, error)
		Run(ctx context.Context, id string, out io.Writer) (runner.Exit, error)
		State(ctx context.Context, id string) (runner.State, error)
		Stop(ctx context.Context, id string, grace time.Duration) error
		Remove(ctx context.Context, id string) error
	}
	// janitor is the subset of the engine that cleans up after jobs.
	janitor interface {
		ImageID(ctx context.Context, ref string) (string, error)
		RemoveImage(ctx context.Context, ref string) error
		Containers(ctx context.Context, labels map[string]string) ([]runner.Container, error)
		Ping(ctx context.Context) error
	}
	imagePusher interface {
		Push(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error)
		// Attach pushes data as an artifact whose subject is the manifest
		// digest subject in ref's repository; Attached reads it back.
		Attach(ctx context.Context, ref, subject, mediaType string, data []byte) (string, error)
		Attached(ctx context.Context, ref, subject, mediaType string) ([]byte, error)
		Resolve(ctx context.Context, ref string) (string, error)
		Tag(ctx context.Context, ref, digest string) error
		// Upload sends an image's blobs, not its manifest: it publishes
		// nothing.
		Upload(ctx context.Context, img v1.Image, refs []string) error
	}
	// imageSource reads a local image (by name) for pushing. An image that
	// is an io.Closer holds something (a file) until it is closed.
	imageSource func(ctx context.Context, ref string) (v1.Image, error)
)

// Engine is what the daemon needs of the Docker engine; runner.Engine is one.
type Engine interface {
	containerRunner
	janitor
}

// Config is the daemon's configuration.
type Config struct {
	// DataDir holds the logs and the unpacked build contexts.
	DataDir string
	// Instance is the data file's instance ID; containers carry it.
	Instance string
	// MaxJobs is how many jobs run at once.
	MaxJobs int
	// Policy bounds what a job may ask; its limits are the defaults of
	// jobs that ask nothing.
	Policy gantry.Policy
	// StopTimeout is the grace period between SIGTERM and SIGKILL when a
	// training container is stopped.
	StopTimeout time.Duration
	// OrphanGrace is how long a container that carries this daemon's label
	// but belongs to no job is left before it is removed.
	OrphanGrace time.Duration
	Logger      *slog.Logger

	// Prune, when set, is called each time a job ends, from the goroutine
	// that ran it, once the job has let go of its image: it brings the
	// blob cache back within its bounds (blobs.Cache.Prune) and returns
	// the bytes it freed. An image read never prunes.
	Prune func() (int64, error)
}

// Daemon runs jobs.
type Daemon struct {
	cfg     Config
	store   jobStore
	builder imageBuilder
	engine  Engine
	pusher  imagePusher
	source  imageSource
	log     *slog.Logger
	now     func() time.Time

	wake    chan struct{}
	changed *broadcaster
	// written wakes the followers of a job's log or build status when
	// it is written.
	written fileNotifier
	// onTailRead, when set (by tests), is called before each read of a
	// followed file.
	onTailRead func(path string)
	mu         sync.Mutex
	active     map[string]context.CancelCauseFunc // jobs this process runs
	// queued holds the context size of each job waiting for a slot, for
	// the queue's bounds; queuedBytes is their sum.
	queued      map[string]int64
	queuedBytes int64
	// fetch is what a build's ADD may fetch from.
	fetch fetchRule
	// tagLocks serialize promotions of each tag.
	tagLocks keyed.Mutex[string]
	wg       sync.WaitGroup
}

// New returns a daemon; Prepare and Run start its work.
func New(cfg Config, st jobStore, b imageBuilder, e Engine, p imagePusher, src imageSource) (*Daemon, error) {
	if cfg.MaxJobs < 1 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "max jobs %d: must be at least 1", cfg.MaxJobs)
	}
	if err := cfg.Policy.Check(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = time.Minute
	}
	if cfg.Policy.Resources.LogBytes <= 0 {
		cfg.Policy.Resources.LogBytes = 256 << 20
	}
	if cfg.Policy.ContextEntries <= 0 {
		cfg.Policy.ContextEntries = 100000
	}
	for _, d := range []string{"logs", "contexts"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	changed := &broadcaster{}
	return &Daemon{
		cfg: cfg, store: &notifyingStore{jobStore: st, changed: changed},
		builder: b, engine: e, pusher: p, source: src,
		log: cfg.Logger, now: time.Now,
		wake:    make(chan struct{}, 1),
		changed: changed,
		active:  map[string]context.CancelCauseFunc{},
		queued:  map[string]int64{},
		fetch:   fetchRule{allowPrivate: cfg.Policy.BuildPrivateFetch, resolve: lookupNetIP},
	}, nil
}

// The causes a job's context ends with, besides gantryd shutting down.
var errCanceled = errors.New("canceled by the user")

// timeoutError ends a phase that ran past its limit.
type timeoutError struct {
	phase string
	limit time.Duration
}

func (e *timeoutError) Error() string { return fmt.Sprintf("%s timed out after %v", e.phase, e.limit) }

// Prepare readies what a previous gantryd left before the API serves: the
// log of every job caught training is cut back to where training began (its
// container's log is replayed from the start when the job resumes), and
// build contexts of jobs that no longer need them are removed.
func (d *Daemon) Prepare(ctx context.Context) error {
	jobs, err := d.store.Unfinished(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, j := range jobs {
		if j.State == gantry.StateQueued {
			d.mu.Lock()
			d.queued[j.ID] = j.ContextSize
			d.queuedBytes += j.ContextSize
			d.mu.Unlock()
		}
		if j.State == gantry.StateRunning && j.ExitCode == nil {
			if err := cutLog(d.LogPath(j.ID), trainingMarker(j.ContainerID)); err != nil {
				return fmt.Errorf("recover job %s: %w", j.ID, err)
			}
		}
	}
	entries, err := os.ReadDir(filepath.Join(d.cfg.DataDir, "contexts"))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range entries {
		j, err := d.store.Get(ctx, e.Name())
		if err != nil || j.State != gantry.StateQueued && (j.State != gantry.StateBuilding || j.Image != "") {
			os.RemoveAll(d.contextDir(e.Name()))
		}
	}
	return nil
}

// Run resumes the jobs a previous gantryd left under way, then schedules
// queued jobs until ctx ends, and waits for the jobs it started to stop.
// Jobs stopped by ctx's end stay as they are, to be resumed by the next
// gantryd; their training containers go on running meanwhile.
func (d *Daemon) Run(ctx context.Context) error {
	jobs, err := d.store.Unfinished(ctx)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("recover: %w", err)
	}
	d.mu.Lock()
	for _, j := range jobs {
		if j.State != gantry.StateQueued {
			d.log.Info("resuming job", "job", j.ID, "state", j.State)
			d.start(ctx, j.ID)
		}
	}
	d.mu.Unlock()
	d.poke()
	sweep := time.NewTicker(max(d.cfg.OrphanGrace/2, time.Second))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			d.wg.Wait()
			return nil
		case <-d.wake:
			if err := d.schedule(ctx); err != nil && ctx.Err() == nil {
				d.log.Error("schedule", "err", err)
			}
		case <-sweep.C:
			d.sweepOrphans(ctx)
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
	// Read under the lock: a queued job changes state only once started
	// here, or by Cancel, which takes the lock too.
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.active) >= d.cfg.MaxJobs {
		// No slot: a submission to a full queue costs no scan of it. A
		// job that ends pokes the scheduler again.
		return nil
	}
	jobs, err := d.store.Unfinished(ctx)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if len(d.active) >= d.cfg.MaxJobs {
			return nil
		}
		if j.State == gantry.StateQueued && d.active[j.ID] == nil {
			d.start(ctx, j.ID)
		}
	}
	return nil
}

// start runs job id in its own goroutine; d.mu must be held. The job's
// context is registered before the goroutine starts, so a cancel that comes
// at any time after reaches it.
func (d *Daemon) start(ctx context.Context, id string) {
	jctx, cancel := context.WithCancelCause(ctx)
	d.active[id] = cancel
	d.dequeue(id)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.runJob(ctx, jctx, id)
		cancel(nil)
		d.mu.Lock()
		delete(d.active, id)
		d.mu.Unlock()
		d.poke()
		if d.cfg.Prune == nil {
			return
		}
		if n, err := d.cfg.Prune(); err != nil {
			d.log.Warn("prune the blob cache", "job", id, "err", err)
		} else if n > 0 {
			d.log.Info("pruned the blob cache", "job", id, "freed", gantry.HumanBytes(n))
		}
	}()
}

// Submit records a new job for spec, with the build context read from tar.
// The spec is checked against the operator's policy, and limits it leaves at
// zero take the policy's, so the record shows what applies. It returns
// ErrInvalid for a bad spec or context, ErrForbidden for a request beyond
// the policy, ErrTooLarge for a context over the limits and ErrTooMany when
// the queue is full; nothing of a refused submission is kept.
func (d *Daemon) Submit(ctx context.Context, spec gantry.Spec, tar io.Reader) (*gantry.Job, error) {
	if err := trainer.CheckSpec(&spec); err != nil {
		return nil, err
	}
	if err := d.cfg.Policy.Apply(&spec); err != nil {
		return nil, err
	}
	if err := d.admit(0); err != nil {
		return nil, err
	}
	j := gantry.NewJob(spec, d.now())
	dir := d.contextDir(j.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	sum := sha256.New()
	lim := Limits{MaxBytes: d.cfg.Policy.ContextBytes, MaxEntries: d.cfg.Policy.ContextEntries}
	size, err := unpack(io.TeeReader(tar, sum), dir, lim)
	if err == nil {
		err = checkDockerfile(dir, spec.Build.Dockerfile)
	}
	if err == nil {
		err = d.fetch.checkFetches(ctx, dir, spec.Build.Dockerfile, spec.Build.BuildArgs)
	}
	if err == nil {
		j.ContextSize = size
		j.Inputs.ContextDigest = "sha256:" + hex.EncodeToString(sum.Sum(nil))
		j.Inputs.Files, err = fileDigests(dir)
		j.Inputs.DockerfileDigest = j.Inputs.Files[spec.Build.Dockerfile]
	}
	if err == nil {
		err = d.enqueue(ctx, j)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.log.Info("job submitted", "job", j.ID, "context_bytes", size)
	d.poke()
	return j, nil
}

// admit says whether one more job of size bytes fits in the queue (ErrTooMany
// when not); d.mu must not be held.
func (d *Daemon) admit(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fits(size)
}

// fits is admit with d.mu held.
func (d *Daemon) fits(size int64) error {
	p := d.cfg.Policy
	if p.MaxQueue > 0 && len(d.queued)+1 > p.MaxQueue {
		return gantry.Errorf(gantry.ErrTooMany, "the queue is full: %d jobs wait for a slot, the most gantryd keeps (--max-queue %d); submit again once some have started", len(d.queued), p.MaxQueue)
	}
	if p.MaxQueuedBytes > 0 && d.queuedBytes+size > p.MaxQueuedBytes {
		return gantry.Errorf(gantry.ErrTooMany, "the queue is full: the build contexts of the jobs waiting hold %s, and this one's %s would take them over gantryd's bound of %s (--max-queued-bytes); submit again once some have started",
			gantry.FormatBytes(d.queuedBytes), gantry.FormatBytes(size), gantry.FormatBytes(p.MaxQueuedBytes))
	}
	return nil
}

// enqueue records job j, counted in the queue until it starts or is
// canceled; the queue's bounds are checked again with its size known.
func (d *Daemon) enqueue(ctx context.Context, j *gantry.Job) error {
	d.mu.Lock()
	if err := d.fits(j.ContextSize); err != nil {
		d.mu.Unlock()
		return err
	}
	d.queued[j.ID] = j.ContextSize
	d.queuedBytes += j.ContextSize
	d.mu.Unlock()
	err := d.store.Create(ctx, j)
	if err != nil {
		d.mu.Lock()
		d.dequeue(j.ID)
		d.mu.Unlock()
	}
	if errors.Is(err, gantry.ErrTooLarge) {
		err = gantry.Errorf(gantry.ErrTooLarge, "%v (the build context's %d files are recorded by name: leave what the build does not need out with .dockerignore)", err, len(j.Inputs.Files))
	}
	return err
}

// dequeue stops counting job id in the queue; d.mu must be held.
func (d *Daemon) dequeue(id string) {
	if n, ok := d.queued[id]; ok {
		d.queuedBytes -= n
		delete(d.queued, id)
	}
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

// Policy returns the operator's policy: what a job may ask.
func (d *Daemon) Policy() gantry.Policy { return d.cfg.Policy }

// Get returns the job id. It returns ErrNotFound.
func (d *Daemon) Get(ctx context.Context, id string) (*gantry.Job, error) {
	return d.store.Get(ctx, id)
}

// List returns a page of jobs, newest first.
// LastEvent returns the number of the newest event: a reader of a page of
// jobs follows the events after it, read before the page.
func (d *Daemon) LastEvent(ctx context.Context) (uint64, error) {
	return d.store.LastEvent(ctx)
}

func (d *Daemon) List(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error) {
	return d.store.List(ctx, o)
}

// Cancel cancels job id in whatever state it is: a queued job ends at once;
// a job under way has its build cancelled, its container stopped (SIGTERM,
// then SIGKILL after the stop timeout) or its push aborted, and ends
// canceled once that is done. Cancelling a canceled job is harmless. It
// returns the record as it stands, ErrNotFound, or ErrConflict for a job that
// ended otherwise.
func (d *Daemon) Cancel(ctx context.Context, id string) (*gantry.Job, error) {
	d.mu.Lock()
	cancel := d.active[id]
	j, err := d.store.Update(ctx, id, func(j *gantry.Job) error {
		if j.State == gantry.StateCanceled {
			return nil
		}
		if j.State.Terminal() {
			return gantry.Errorf(gantry.ErrConflict, "job %s already %s: there is nothing to cancel", id, j.State)
		}
		j.CancelRequested = true
		if j.State == gantry.StateQueued && cancel == nil {
			d.dequeue(id)
			j.Error = errCanceled.Error()
			return j.Move(gantry.StateCanceled, d.now())
		}
		return nil
	})
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if cancel != nil {
		cancel(errCanceled)
	} else if j.State == gantry.StateCanceled {
		os.RemoveAll(d.contextDir(id))
	}
	d.log.Info("cancel requested", "job", id, "state", j.State)
	return j, nil
}

// Push pushes a finished job's image again: to refs, or when refs is empty to
// the job's own --push references, within the daemon's default push timeout.
// Only a job whose training passed the gate may be pushed. It is idempotent,
// and records each push in the job. It returns ErrNotFound (no such job, or
// its image is gone), ErrConflict (the job has not passed, or has not
// ended), ErrInvalid (a bad reference) and ErrUnavailable (the registry
// failed).
func (d *Daemon) Push(ctx context.Context, id string, refs []string, progress io.Writer) (*gantry.Job, error) {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !j.State.Terminal() {
		return nil, gantry.Errorf(gantry.ErrConflict, "job %s is %s: wait for it to end (gantry push is for finished jobs)", id, j.State)
	}
	if !j.GatePassed {
		return nil, gantry.Errorf(gantry.ErrConflict, "job %s is %s: only a job whose training passed its gate may be pushed", id, j.State)
	}
	if len(refs) == 0 {
		refs = j.Spec.Push
	}
	if len(refs) == 0 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "job %s has no --push references: say where with --to", id)
	}
	for _, r := range refs {
		if _, err := gantry.ParseRef(r); err != nil {
			return nil, err
		}
	}
	img, err := d.source(ctx, j.ImageName)
	if errors.Is(err, gantry.ErrNotFound) && j.Image != "" {
		// Removed from the engine: its blobs may still be kept.
		img, err = d.source(ctx, j.Image)
	}
	if errors.Is(err, gantry.ErrNotFound) {
		return nil, gantry.Errorf(gantry.ErrNotFound, "job %s: its image %s is no longer in the engine, nor are all its layers kept: %v", id, j.ImageName, err)
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: read its image %s: %w", id, j.ImageName, err)
	}
	defer layers.Release(img)
	pctx, cancel := withLimit(ctx, "push", d.cfg.Policy.Timeouts.Push)
	defer cancel()
	pushes, perr := d.pusher.Push(pctx, img, refs, progress)
	if perr != nil {
		perr = gantry.Errorf(gantry.ErrUnavailable, "%v", phaseErr(ctx, pctx, perr))
	}
	j, err = d.store.Update(context.WithoutCancel(ctx), id, func(j *gantry.Job) error {
		j.Pushes = mergePushes(j.Pushes, pushes)
		return nil
	})
	if perr != nil {
		return j, perr
	}
	return j, err
}

// mergePushes adds pushes to have, replacing earlier pushes to the same ref.
func mergePushes(have, pushes []gantry.Push) []gantry.Push {
	out := append([]gantry.Push(nil), have...)
	for _, p := range pushes {
		replaced := false
		for i := range out {
			if out[i].Ref == p.Ref {
				out[i], replaced = p, true
			}
		}
		if !replaced {
			out = append(out, p)
		}
	}
	return out
}

func (d *Daemon) contextDir(id string) string { return filepath.Join(d.cfg.DataDir, "contexts", id) }

// LogPath is where job id's log lives: the build output, the training
// output and the push progress, in that order.
func (d *Daemon) LogPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "logs", id+".log")
}

// StatusPath is where job id's build status lives: BuildKit's status
// updates as JSON lines, for gantry watch to draw BuildKit's own display.
func (d *Daemon) StatusPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "logs", id+".build.jsonl")
}

// openLog opens job id's log for appending, as a joblog.Writer that wakes
// the log's followers after each write.
func (d *Daemon) openLog(id string) (*joblog.Writer, func() error, error) {
	path := d.LogPath(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	atStart := true
	if fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
			f.Close()
			return nil, nil, err
		}
		atStart = last[0] == '\n'
	}
	return joblog.NewWriter(f, atStart, func() { d.written.notify(path) }), f.Close, nil
}

// runJob runs job id's life under jctx and settles how it ended. daemonCtx
// is gantryd's lifetime: when it ends, the job is left to be resumed.
func (d *Daemon) runJob(daemonCtx, jctx context.Context, id string) {
	logf, closeLog, err := d.openLog(id)
	if err != nil {
		d.finish(jctx, id, nil, gantry.StateFailed, fmt.Sprintf("open job log: %v", err))
		return
	}
	defer closeLog()
	err = d.life(jctx, id, logf)
	switch {
	case err == nil:
	case daemonCtx.Err() != nil:
		logf.Linef("==> gantryd stopped; the job goes on when it starts again")
		d.log.Info("job left to resume", "job", id)
	case errors.Is(err, errCanceled) || errors.Is(context.Cause(jctx), errCanceled):
		d.cleanup(jctx, id, true)
		d.finish(jctx, id, logf, gantry.StateCanceled, errCanceled.Error())
	default:
		d.cleanup(jctx, id, false)
		d.finish(jctx, id, logf, gantry.StateFailed, err.Error())
	}
}

// life is one job's life: build, run, gate, push. It goes on from whatever
// state the record holds, so it serves a new job and one a restart resumes.
// It returns nil once the job has ended, or why it stopped.
func (d *Daemon) life(ctx context.Context, id string, logf *joblog.Writer) error {
	say := func(format string, args ...any) { logf.Linef("==> "+format, args...) }
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if j.CancelRequested {
		return errCanceled
	}

	// Queued: the slot is ours.
	if j.State == gantry.StateQueued {
		if j, err = d.move(ctx, id, gantry.StateBuilding, nil); err != nil {
			return err
		}
		d.log.Info("job building", "job", id)
	}

	if j.State == gantry.StateBuilding {
		// Build, unless the image was recorded before a restart.
		if j.Image == "" {
			if _, err := os.Stat(d.contextDir(id)); err != nil {
				return fmt.Errorf("the build context is gone (%v): submit the job again", err)
			}
			status, err := os.Create(d.StatusPath(id))
			if err != nil {
				return err
			}
			bctx, cancel := withLimit(ctx, "build", j.Spec.Timeouts.Build)
			say("building %s (Dockerfile %s)", j.ImageName, j.Spec.Build.Dockerfile)
			imageID, err := d.builder.Build(bctx, builder.Request{
				ContextDir: d.contextDir(id),
				Spec:       j.Spec.Build,
				Name:       j.ImageName,
				Labels:     d.labels(id),
				Status:     d.notifying(status, d.StatusPath(id)),
			}, logf.Output())
			cancel()
			status.Close()
			if err != nil {
				return phaseErr(ctx, bctx, err)
			}
			bases := d.bases(ctx, id)
			if j, err = d.store.Update(ctx, id, func(j *gantry.Job) error {
				j.Image = imageID
				j.Inputs.Bases = bases
				return nil
			}); err != nil {
				return err
			}
			os.RemoveAll(d.contextDir(id))
			say("built image %s", imageID)
		}

		// Create the container and record it before it starts. A container
		// a crash left between the two has the job's name: remove it first.
		if err := d.engine.Remove(ctx, containerName(id)); err != nil {
			return err
		}
		r := j.Spec.Resources
		cid, err := d.engine.Create(ctx, runner.Spec{
			Image:     j.Image,
			Name:      containerName(id),
			Labels:    d.labels(id),
			Memory:    r.Memory,
			NanoCPUs:  int64(r.CPUs * 1e9),
			PidsLimit: r.PidsLimit,
			Network:   j.Spec.Sandbox.Network,
			CapAdd:    j.Spec.Sandbox.CapAdd,
			LogBytes:  d.logCap(j),
		})
		if err != nil {
			return err
		}
		if j, err = d.move(ctx, id, gantry.StateRunning, func(j *gantry.Job) { j.ContainerID = cid }); err != nil {
			d.engine.Remove(context.WithoutCancel(ctx), cid)
			return err
		}
		logf.Linef("%s", trainingLine(cid))
	}

	// While training runs, the image's layers go to the registries
	// already, so that a push after the gate costs only the manifests.
	var upload *earlyUpload
	defer func() { upload.stop() }()

	if j.State == gantry.StateRunning {
		// Train, unless the exit was recorded before a restart.
		if j.ExitCode == nil {
			if len(j.Spec.Push) > 0 {
				upload = d.uploadEarly(ctx, j)
			}
			exit, metrics, err := d.train(ctx, j, logf)
			if err != nil {
				return err
			}
			if j, err = d.store.Update(ctx, id, func(j *gantry.Job) error {
				code := exit.Code
				j.ExitCode = &code
				j.Metrics = metrics
				j.Error = ""
				if exit.OOMKilled {
					j.Error = "training was killed: out of memory (OOMKilled)"
				} else if exit.Code != 0 {
					j.Error = fmt.Sprintf("training exited with code %d", exit.Code)
				} else if reason := gate(j.Spec.MinAccuracy, metrics); reason != "" {
					j.Error = reason
				} else {
					j.GatePassed = true
				}
				return nil
			}); err != nil {
				return err
			}
		}
		// The record is complete: the container can go.
		if err := d.engine.Remove(ctx, j.ContainerID); err != nil {
			d.log.Warn("remove container", "job", id, "err", err)
		}
		if a := j.Metrics.Accuracy; a != nil {
			say("accuracy %.4f", *a)
		} else {
			say("accuracy: %s", j.Metrics.AccuracyError)
		}

		// Gate. A job that will not push stops its upload before it ends:
		// once it has ended, nothing of it goes on.
		if !j.GatePassed || len(j.Spec.Push) == 0 {
			upload.stop()
		}
		switch {
		case j.ExitCode != nil && *j.ExitCode != 0:
			return errors.New(j.Error)
		case !j.GatePassed:
			say("rejected: %s", j.Error)
			return d.finish(ctx, id, nil, gantry.StateRejected, j.Error)
		case len(j.Spec.Push) == 0:
			return d.finish(ctx, id, logf, gantry.StateSucceeded, "")
		}
		if j, err = d.move(ctx, id, gantry.StatePushing, nil); err != nil {
			return err
		}
	}

	if j.State == gantry.StatePushing {
		// Push to each reference, and to the immutable job-<id> tag of each
		// repository, so every result can be found and rolled back to.
		refs := append(append([]string(nil), j.Spec.Push...), jobTags(j)...)
		say("pushing to %v", refs)
		pctx, cancel := withLimit(ctx, "push", j.Spec.Timeouts.Push)
		defer cancel()
		upload.wait(pctx)
		img, err := d.source(pctx, j.ImageName)
		if err != nil {
			return phaseErr(ctx, pctx, err)
		}
		defer layers.Release(img)
		pushes, err := d.pusher.Push(pctx, img, refs, logf.Own())
		// Record what moved, even when the rest failed.
		if j, err = d.recordPushes(ctx, id, pushes, err); err != nil {
			return phaseErr(ctx, pctx, err)
		}
		// The provenance record goes beside the image, by digest: the
		// image's own digest does not change.
		if j, err = d.attachProvenance(pctx, j, logf); err != nil {
			return phaseErr(ctx, pctx, err)
		}
		if j.Spec.Promote != "" {
			if err := d.promote(pctx, j, logf); err != nil {
				return phaseErr(ctx, pctx, err)
			}
		}
		return d.finish(ctx, id, logf, gantry.StateSucceeded, "")
	}
	return fmt.Errorf("job %s: nothing to do in state %s", id, j.State)
}

// earlyUpload is an upload of a job's blobs running beside its training.
type earlyUpload struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// uploadEarly starts sending job j's image's blobs to the repositories it
// pushes to. Blobs are content-addressed: no tag or manifest moves, so a
// job the gate rejects has published nothing. Failures are logged and left
// to the push, which sends whatever is missing.
func (d *Daemon) uploadEarly(ctx context.Context, j *gantry.Job) *earlyUpload {
	uctx, cancel := context.WithCancel(ctx)
	u := &earlyUpload{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		start := time.Now()
		img, err := d.source(uctx, j.ImageName)
		if err == nil {
			err = d.pusher.Upload(uctx, img, j.Spec.Push)
			layers.Release(img)
		}
		if err != nil {
			if uctx.Err() == nil {
				d.log.Warn("upload of the image's layers during training failed; the push will send them", "job", j.ID, "err", err)
			}
			return
		}
		d.log.Info("image layers uploaded during training", "job", j.ID, "took", time.Since(start).Round(time.Millisecond))
	}()
	return u
}

// wait waits for the upload to end, or stops it when ctx ends first.
func (u *earlyUpload) wait(ctx context.Context) {
	if u == nil {
		return
	}
	select {
	case <-u.done:
	case <-ctx.Done():
		u.stop()
	}
}

// stop ends the upload and waits for it.
func (u *earlyUpload) stop() {
	if u == nil {
		return
	}
	u.cancel()
	<-u.done
}

// jobTags returns REPO:job-<id> for each repository the job pushes to.
func jobTags(j *gantry.Job) []string {
	var tags []string
	seen := map[string]bool{}
	for _, r := range j.Spec.Push {
		t, err := gantry.ParseRef(r)
		if err != nil {
			continue
		}
		repo := t.Context().Name()
		if !seen[repo] {
			seen[repo] = true
			tags = append(tags, repo+":job-"+j.ID)
		}
	}
	return tags
}

// recordPushes records the pushes done; pushErr is returned unless the
// record itself failed.
func (d *Daemon) recordPushes(ctx context.Context, id string, pushes []gantry.Push, pushErr error) (*gantry.Job, error) {
	j, err := d.store.Update(context.WithoutCancel(ctx), id, func(j *gantry.Job) error {
		j.Pushes = mergePushes(j.Pushes, pushes)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return j, pushErr
}

// attachProvenance records the job's provenance and pushes it as an
// artifact referring to the image in each repository pushed to.
func (d *Daemon) attachProvenance(ctx context.Context, j *gantry.Job, logf *joblog.Writer) (*gantry.Job, error) {
	prov := gantry.NewProvenance(j)
	data, err := json.Marshal(prov)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, p := range j.Pushes {
		repo := gantry.Repository(p.Ref)
		if seen[repo] {
			continue
		}
		seen[repo] = true
		a, err := d.pusher.Attach(ctx, p.Ref, p.Digest, gantry.ProvenanceType, data)
		if err != nil {
			return nil, fmt.Errorf("attach the provenance record: %w", err)
		}
		logf.Linef("provenance record %s attached to %s@%s", a, repo, p.Digest)
	}
	return d.store.Update(context.WithoutCancel(ctx), j.ID, func(j *gantry.Job) error {
		j.Provenance = prov
		return nil
	})
}

// promote moves the job's --promote tag, in each repository it pushed to,
// to its image when its accuracy beats the image the tag holds now, as that
// image's provenance record in the registry says. Jobs promoting the same
// tag take turns, so the better one ends on the tag whatever the order.
func (d *Daemon) promote(ctx context.Context, j *gantry.Job, logf *joblog.Writer) error {
	if j.Metrics.Accuracy == nil {
		return nil
	}
	var decisions []gantry.Promotion
	seen := map[string]bool{}
	for _, p := range j.Pushes {
		repo := gantry.Repository(p.Ref)
		if seen[repo] {
			continue
		}
		seen[repo] = true
		ref := repo + ":" + j.Spec.Promote
		dec, err := d.promoteOne(ctx, ref, p, *j.Metrics.Accuracy, j.Spec.MinImprovement)
		if err != nil {
			return err
		}
		logf.Linef("==> %s: %s", ref, dec.Reason)
		decisions = append(decisions, dec)
	}
	_, err := d.store.Update(context.WithoutCancel(ctx), j.ID, func(j *gantry.Job) error {
		j.Promotions = decisions
		return nil
	})
	return err
}

func (d *Daemon) promoteOne(ctx context.Context, ref string, p gantry.Push, acc, minImprovement float64) (gantry.Promotion, error) {
	unlock := d.tagLocks.Lock(ref)
	defer unlock()
	var champion *float64
	cur, err := d.pusher.Resolve(ctx, ref)
	switch {
	case errors.Is(err, gantry.ErrNotFound):
	case err != nil:
		return gantry.Promotion{}, err
	case cur == p.Digest:
		return gantry.Promotion{Tag: ref, Promoted: true, Reason: "promoted: the tag already holds this image"}, nil
	default:
		data, err := d.pusher.Attached(ctx, ref, cur, gantry.ProvenanceType)
		if err != nil && !errors.Is(err, gantry.ErrNotFound) {
			return gantry.Promotion{}, err
		}
		var prov gantry.Provenance
		if err == nil && json.Unmarshal(data, &prov) == nil {
			champion = prov.Metrics.Accuracy
		}
	}
	dec := gantry.Decide(ref, acc, champion, minImprovement)
	if dec.Promoted {
		if err := d.pusher.Tag(ctx, ref, p.Digest); err != nil {
			return gantry.Promotion{}, err
		}
	}
	return dec, nil
}

// withLimit bounds a phase by limit (none when it is zero); the context ends
// with a timeoutError naming the phase.
func withLimit(ctx context.Context, phase string, limit gantry.Duration) (context.Context, context.CancelFunc) {
	if limit <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, time.Duration(limit), &timeoutError{phase, time.Duration(limit)})
}

// phaseErr names a phase's timeout when the phase's own deadline ended it
// (keeping err when it already says so, with more).
func phaseErr(jobCtx, phaseCtx context.Context, err error) error {
	var te *timeoutError
	if jobCtx.Err() == nil && errors.As(context.Cause(phaseCtx), &te) && !errors.As(err, &te) {
		return te
	}
	return err
}

// logCap is the training output job j keeps: its own cap, or for a job
// recorded before jobs had one, the policy's.
func (d *Daemon) logCap(j *gantry.Job) int64 {
	if n := j.Spec.Resources.LogBytes; n > 0 {
		return n
	}
	return d.cfg.Policy.Resources.LogBytes
}

// trainingLine says that training begins in container cid.
func trainingLine(cid string) string { return fmt.Sprintf("==> training in container %.12s", cid) }

// trainingMarker is the log line after which a container's output starts,
// as stored: a line of gantryd's own, which no training output can forge.
func trainingMarker(cid string) string { return joblog.Line(trainingLine(cid)) }

func containerName(id string) string { return "gantry-" + id }

func (d *Daemon) labels(id string) map[string]string {
	return map[string]string{runner.LabelJob: id, runner.LabelDaemon: d.cfg.Instance}
}

// train runs (or re-attaches to) the job's container until it exits, and
// reads its metrics from the output. The training timeout counts from when
// the job first started running, across restarts. When the engine goes away
// mid-way, train waits for it and re-attaches if the container survived.
func (d *Daemon) train(ctx context.Context, j *gantry.Job, logf *joblog.Writer) (runner.Exit, gantry.Metrics, error) {
	pattern, err := trainer.Compile(j.Spec.MetricRegex)
	if err != nil {
		return runner.Exit{}, gantry.Metrics{}, err
	}
	reader := pattern.NewReader()
	lines := iox.NewLineSplitter(maxLine, reader.Line)
	// A flood of output fills the log only up to its cap; the metric reader
	// still reads every line.
	capped := &capWriter{w: logf.Output(), left: d.logCap(j), note: func() {
		logf.Linef("==> the training output ran over the log's cap; the rest is not kept")
	}}
	out := &countWriter{w: io.MultiWriter(capped, lines)}

	// The limit counts from when training first started, across restarts.
	tctx, cancel := context.WithCancel(ctx)
	if limit := time.Duration(j.Spec.Timeouts.Train); limit > 0 {
		started := d.now()
		if j.Times.Run.Started != nil {
			started = *j.Times.Run.Started
		}
		tctx, cancel = context.WithDeadlineCause(ctx, started.Add(limit), &timeoutError{"training", limit})
	}
	defer cancel()
	for {
		// The engine replays the log from the start: skip what we hold.
		exit, err := d.engine.Run(tctx, j.ContainerID, &iox.SkipWriter{W: out, Skip: out.n})
		if err == nil {
			lines.Flush()
			m := gantry.Metrics{}
			if acc, err := reader.Accuracy(); err == nil {
				m.Accuracy = &acc
			} else {
				m.AccuracyError = clip(err.Error(), maxReason)
			}
			return exit, m, nil
		}
		if tctx.Err() != nil {
			if ctx.Err() == nil || errors.Is(context.Cause(ctx), errCanceled) {
				// Timed out or canceled: stop it now. (On shutdown it runs on.)
				d.engine.Stop(context.WithoutCancel(ctx), j.ContainerID, d.cfg.StopTimeout)
			}
			return runner.Exit{}, gantry.Metrics{}, phaseErr(ctx, tctx, err)
		}
		if !errors.Is(err, gantry.ErrUnavailable) {
			return runner.Exit{}, gantry.Metrics{}, err
		}
		logf.Linef("==> lost the Docker engine (%v); waiting for it", err)
		if err := d.waitEngine(tctx); err != nil {
			return runner.Exit{}, gantry.Metrics{}, phaseErr(ctx, tctx, err)
		}
		st, err := d.engine.State(tctx, j.ContainerID)
		if errors.Is(err, gantry.ErrNotFound) {
			return runner.Exit{}, gantry.Metrics{}, errors.New("the training container disappeared while the Docker engine was away")
		}
		if err != nil {
			return runner.Exit{}, gantry.Metrics{}, err
		}
		switch {
		case st.Running:
			logf.Linef("==> the container survived; re-attached")
		case st.ExitCode == 0:
			// It finished by itself meanwhile: collect its log and result.
			logf.Linef("==> the container finished meanwhile; collecting its output")
		default:
			return runner.Exit{}, gantry.Metrics{}, fmt.Errorf("the Docker engine restarted while training ran: the container ended with exit code %d", st.ExitCode)
		}
	}
}

// waitEngine waits until the engine answers again.
func (d *Daemon) waitEngine(ctx context.Context) error {
	for {
		if err := d.engine.Ping(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// gate says why a job that trained with exit 0 must not be pushed, or ""
// when it passes.
func gate(min *float64, m gantry.Metrics) string {
	if min == nil {
		return ""
	}
	if m.Accuracy == nil {
		return fmt.Sprintf("the gate needs accuracy >= %g, but %s", *min, m.AccuracyError)
	}
	if *m.Accuracy < *min {
		return fmt.Sprintf("accuracy %.4f is below the gate %g", *m.Accuracy, *min)
	}
	return ""
}

// move commits job id's move to state to, with edit applied in the same
// transaction. It is committed even when ctx has ended.
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

// finish ends job id in a terminal state with the reason, which also goes to
// the log (when logf is given) as its last line.
func (d *Daemon) finish(ctx context.Context, id string, logf *joblog.Writer, to gantry.State, reason string) error {
	reason = clip(reason, maxReason)
	if logf != nil {
		if reason != "" {
			logf.Linef("==> %s: %s", to, reason)
		} else {
			logf.Linef("==> %s", to)
		}
	}
	_, err := d.move(ctx, id, to, func(j *gantry.Job) {
		j.Error = reason
		if j.Provenance == nil {
			j.Provenance = gantry.NewProvenance(j)
		}
	})
	if err == nil {
		d.log.Info("job "+string(to), "job", id, "reason", reason)
	}
	return err
}

// maxReason bounds the reasons a record keeps (a build error, a training
// output line): the log has the whole of them.
const maxReason = 4 << 10

// clip cuts s to at most n bytes, on a rune boundary, saying so.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = " [...]"
	cut := n - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}

// cleanup removes what a job that ends early left: its container (stopped
// first, with the grace period) and its build context; for a canceled job,
// its image too. (A failed job keeps its image, to be looked into.)
func (d *Daemon) cleanup(ctx context.Context, id string, canceled bool) {
	ctx = context.WithoutCancel(ctx)
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return
	}
	if j.ContainerID != "" {
		d.engine.Stop(ctx, j.ContainerID, d.cfg.StopTimeout)
		if err := d.engine.Remove(ctx, j.ContainerID); err != nil {
			d.log.Warn("remove container", "job", id, "err", err)
		}
	}
	os.RemoveAll(d.contextDir(id))
	// By name: a cancel can land after the build made the image but
	// before the record held it.
	if canceled {
		if err := d.engine.RemoveImage(ctx, j.ImageName); err != nil {
			d.log.Warn("remove image", "job", id, "err", err)
		}
	}
}

// sweepOrphans removes containers that carry this daemon's label but that no
// job holds (a job that ended, or one the store never knew), once they are
// older than the grace period.
func (d *Daemon) sweepOrphans(ctx context.Context) {
	cs, err := d.engine.Containers(ctx, map[string]string{runner.LabelDaemon: d.cfg.Instance})
	if err != nil {
		d.log.Warn("sweep orphans", "err", err)
		return
	}
	for _, c := range cs {
		if d.now().Sub(c.Created) < d.cfg.OrphanGrace {
			continue
		}
		id := c.Labels[runner.LabelJob]
		d.mu.Lock()
		busy := d.active[id] != nil
		d.mu.Unlock()
		if busy {
			continue
		}
		j, err := d.store.Get(ctx, id)
		if err == nil && !j.State.Terminal() && j.ContainerID == c.ID {
			continue
		}
		if err != nil && !errors.Is(err, gantry.ErrNotFound) {
			continue
		}
		d.log.Info("removing orphan container", "container", fmt.Sprintf("%.12s", c.ID), "job", id)
		if err := d.engine.Remove(ctx, c.ID); err != nil {
			d.log.Warn("remove orphan", "container", fmt.Sprintf("%.12s", c.ID), "err", err)
		}
	}
}
