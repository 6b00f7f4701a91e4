package daemon

// The service the API calls: submit (with the queue's bounds), read, list,
// cancel.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/trainer"
)

// Submit records a new job for spec, with the build context read from tar.
// The spec is checked against the operator's policy, and limits it leaves at
// zero take the policy's, so the record shows what applies. secrets are the
// values of the variables spec.Run.SecretEnv names, no more, no less: they
// are held in memory until the job's container is created, and written
// nowhere. A dataset's host path is recorded as its real path, the one
// mounted. It returns ErrInvalid for a bad spec, secrets or context, or a
// dataset that does not exist, ErrForbidden for a request beyond the policy
// (a dataset outside every --dataset-root), ErrTooLarge for a context over
// the limits and ErrTooMany when the queue is full; nothing of a refused
// submission is kept.
func (d *Daemon) Submit(ctx context.Context, spec gantry.Spec, secrets map[string]string, tar io.Reader) (*gantry.Job, error) {
	tr := newTrace()
	if err := d.checkSubmit(ctx, &spec, secrets); err != nil {
		return nil, err
	}
	if err := d.admit(0); err != nil {
		return nil, err
	}
	tr.mark("checked")
	j := gantry.NewJob(spec, d.now())
	dir := d.contextDir(j.ID)
	in, err := d.unpackContext(ctx, dir, spec, tar)
	tr.mark("unpacked")
	if err == nil {
		j.ContextSize, j.Inputs = in.ContextSize, in.Inputs
		if len(secrets) > 0 {
			d.secrets.put(j.ID, secrets) // before the job can start
		}
		d.holdBuildSecrets(ctx, j.ID)
		err = d.enqueue(ctx, j)
		tr.mark("recorded")
	}
	if err != nil {
		d.secrets.forget(j.ID)
		d.buildSecrets.forget(j.ID)
		os.RemoveAll(dir)
		return nil, err
	}
	d.log.Info("job submitted", "job", j.ID, "context_bytes", j.ContextSize)
	d.log.Debug("submit trace", append([]any{"job", j.ID}, tr.attrs()...)...)
	d.poke()
	return j, nil
}

// checkSubmit checks spec as Submit and SubmitSweep take it: the trainer
// contract, the operator's policy (which fills the limits left at zero),
// the secrets' values and the datasets.
func (d *Daemon) checkSubmit(ctx context.Context, spec *gantry.Spec, secrets map[string]string) error {
	if err := trainer.CheckSpec(spec); err != nil {
		return err
	}
	if err := d.cfg.Policy.Apply(spec); err != nil {
		return err
	}
	if err := checkSecrets(*spec, secrets); err != nil {
		return err
	}
	if err := d.checkWebhooks(ctx, spec); err != nil {
		return err
	}
	if err := checkBuildSecrets(ctx, spec); err != nil {
		return err
	}
	return d.checkDatasets(ctx, spec)
}

// unpackContext unpacks the build context from tar into dir (which it
// makes) and returns what a job records of it: its size (in ContextSize)
// and its digests (in Inputs). The caller removes dir on error.
func (d *Daemon) unpackContext(ctx context.Context, dir string, spec gantry.Spec, tar io.Reader) (*gantry.Job, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	sum := sha256.New()
	lim := Limits{MaxBytes: d.cfg.Policy.ContextBytes, MaxEntries: d.cfg.Policy.ContextEntries}
	size, err := unpack(io.TeeReader(tar, sum), dir, lim)
	var df []byte
	if err == nil {
		df, err = readDockerfile(dir, spec.Build.Dockerfile)
	}
	if err == nil {
		err = d.fetch.checkFetches(ctx, df, spec.Build.Dockerfile, spec.Build.BuildArgs)
	}
	if err != nil {
		return nil, err
	}
	in := &gantry.Job{ContextSize: size}
	in.Inputs.ContextDigest = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	if in.Inputs.Files, err = fileDigests(dir); err != nil {
		return nil, err
	}
	in.Inputs.DockerfileDigest = in.Inputs.Files[spec.Build.Dockerfile]
	return in, nil
}

// admit says whether one more job of size bytes fits in the queue (ErrTooMany
// when not); d.mu must not be held.
func (d *Daemon) admit(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fits(size)
}

// fits is admit with d.mu held.
func (d *Daemon) fits(size int64) error { return d.fitsN(1, size) }

// fitsN says whether n more jobs holding size bytes fit in the queue; d.mu
// must be held.
func (d *Daemon) fitsN(n int, size int64) error {
	p := d.cfg.Policy
	if p.MaxQueue > 0 && len(d.queued)+n > p.MaxQueue {
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
	d.addWebhooks(j)
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

// readDockerfile reads the Dockerfile name of the context in dir. It
// returns ErrInvalid when there is none (or it is not a regular file).
func readDockerfile(dir, name string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(name)
	if err == nil {
		defer f.Close()
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Mode().IsRegular() {
			return io.ReadAll(f)
		}
	}
	return nil, gantry.Errorf(gantry.ErrInvalid, "build context has no Dockerfile at %q (give its path with -f)", name)
}

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
	jobs, next, err := d.store.List(ctx, o)
	for _, j := range jobs {
		dropFileLists(j)
	}
	return jobs, next, err
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
		d.secrets.forget(id)
		os.RemoveAll(d.contextDir(id))
		d.pointEnded(ctx, id)
	}
	d.log.Info("cancel requested", "job", id, "state", j.State)
	return j, nil
}
