package daemon

// One run of one job: its steps, top to bottom, and how it ends.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unicode/utf8"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/internal/joblog"
	"github.com/gantry-ml/gantry/push"
	"github.com/gantry-ml/gantry/runner"
)

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
		defer push.Release(img)
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
