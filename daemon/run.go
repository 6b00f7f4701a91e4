package daemon

// One run of one job: its steps, top to bottom, and how it ends.

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/gantry-ml/gantry"
)

// runJob runs job id's life under jctx and settles how it ended. daemonCtx
// is gantryd's lifetime: when it ends, the job is left to be resumed.
func (d *Daemon) runJob(daemonCtx, jctx context.Context, id string) {
	logf, err := d.openLog(id)
	if err != nil {
		d.finish(jctx, id, nil, gantry.StateFailed, fmt.Sprintf("open job log: %v", err))
		return
	}
	defer logf.Close()
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

// life is one job's life: build, create, train, gate, publish. It goes on
// from the checkpoint the record holds, so it serves a new job and one a
// restart resumes. It returns nil once the job has ended, or why it stopped.
func (d *Daemon) life(ctx context.Context, id string, logf *jobLog) error {
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
	r := &jobRun{d: d, j: j, log: logf}
	// An upload started beside training ends with the run, whatever way.
	defer func() { r.upload.stop() }()
	for _, s := range []struct {
		done gantry.Checkpoint
		run  func(context.Context) error
	}{
		{gantry.CheckpointBuilt, r.build},
		{gantry.CheckpointCreated, r.create},
		{gantry.CheckpointExited, r.train},
		{gantry.CheckpointGated, r.gate},
		{gantry.CheckpointPublished, r.publish},
	} {
		t0 := time.Now()
		if r.j.State.Terminal() {
			return nil
		}
		if r.j.Reached(s.done) {
			continue // done before a restart
		}
		if err := s.run(ctx); err != nil {
			return err
		}
		d.log.Debug("job step", "job", id, "step", s.done, "took", time.Since(t0))
	}
	if !r.j.State.Terminal() {
		return fmt.Errorf("job %s: nothing to do in state %s", id, r.j.State)
	}
	return nil
}

// The causes a job's context ends with, besides gantryd shutting down.
var errCanceled = errors.New("canceled by the user")

// timeoutError ends a phase that ran past its limit.
type timeoutError struct {
	phase string
	limit time.Duration
}

func (e *timeoutError) Error() string { return fmt.Sprintf("%s timed out after %v", e.phase, e.limit) }

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
// the log (when logf is given) as its last line; edits are applied in the
// same transaction. It returns the record as ended.
func (d *Daemon) finish(ctx context.Context, id string, logf *jobLog, to gantry.State, reason string, edits ...func(*gantry.Job)) (*gantry.Job, error) {
	reason = clip(reason, maxReason)
	if logf != nil {
		if reason != "" {
			logf.Linef("==> %s: %s", to, reason)
		} else {
			logf.Linef("==> %s", to)
		}
	}
	j, err := d.move(ctx, id, to, func(j *gantry.Job) {
		for _, edit := range edits {
			edit(j)
		}
		j.Error = reason
		if j.Provenance == nil {
			j.Provenance = gantry.NewProvenance(j)
		}
	})
	if err == nil {
		d.secrets.forget(id)
		d.buildSecrets.forget(id)
		d.log.Info("job "+string(to), "job", id, "reason", reason)
	}
	return j, err
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
