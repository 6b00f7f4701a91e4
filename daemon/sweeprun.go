package daemon

// A sweep's run: its one build, shared by its points, and its end, once
// every point has ended: the winner chosen, recorded, then published.

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/gantry-ml/gantry"
)

// sharedBuild is a sweep's build under way in this process: done closes
// once it has ended, and the sweep's record says how.
type sharedBuild struct{ done chan struct{} }

// buildShared gives a sweep's point the sweep's image: the first point to
// get here builds it from the sweep's context and records it in the sweep;
// the others wait for that and take it, building nothing. A failed build
// fails every point with its error; a build stopped by its point's cancel
// is taken up by the next point.
func (r *jobRun) buildShared(ctx context.Context) error {
	d, sweep := r.d, r.j.Sweep
	if err := d.secretsKept(r.j); err != nil {
		return err
	}
	for waited := false; ; waited = true {
		sw, err := d.store.GetSweep(ctx, sweep)
		switch {
		case err != nil:
			return err
		case sw.Image != "":
			return r.takeImage(ctx, sw)
		case sw.Error != "":
			return errors.New(sw.Error)
		}
		d.mu.Lock()
		b := d.sweepBuilds[sweep]
		if b == nil {
			b = &sharedBuild{done: make(chan struct{})}
			d.sweepBuilds[sweep] = b
			d.mu.Unlock()
			return r.buildForSweep(ctx, b)
		}
		d.mu.Unlock()
		if !waited {
			r.say("waiting for the sweep's image, built once for all its points")
		}
		select {
		case <-b.done:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// buildForSweep builds the sweep's image as job r.j and records it in the
// sweep (or the build's failure, which is every point's).
func (r *jobRun) buildForSweep(ctx context.Context, b *sharedBuild) error {
	d, sweep := r.d, r.j.Sweep
	defer func() {
		d.mu.Lock()
		delete(d.sweepBuilds, sweep)
		d.mu.Unlock()
		close(b.done)
	}()
	err := r.buildIn(ctx, d.contextDir(sweep))
	if err != nil && ctx.Err() == nil && r.j.Image == "" {
		// The build itself failed: every point fails with its error.
		if _, uerr := d.store.UpdateSweep(context.WithoutCancel(ctx), sweep, func(sw *gantry.Sweep) error {
			sw.Error = clip(err.Error(), maxReason)
			return nil
		}); uerr != nil {
			d.log.Error("record the sweep's build failure", "sweep", sweep, "err", uerr)
		}
	}
	if err != nil {
		return err
	}
	if _, err := d.store.UpdateSweep(ctx, sweep, func(sw *gantry.Sweep) error {
		sw.Image = r.j.Image
		return nil
	}); err != nil {
		return err
	}
	os.RemoveAll(d.contextDir(sweep))
	r.say("built image %s, once for every point of sweep %s", r.j.Image, sweep)
	return nil
}

// takeImage records the sweep's image as the job's, with the bases of the
// point that built it: checkpoint built.
func (r *jobRun) takeImage(ctx context.Context, sw *gantry.Sweep) error {
	d := r.d
	var bases []gantry.Base
	for _, id := range sw.Jobs {
		if j, err := d.store.Get(ctx, id); err == nil && j.Image == sw.Image && j.Reached(gantry.CheckpointBuilt) {
			bases = j.Inputs.Bases
			break
		}
	}
	var err error
	r.j, err = d.store.Update(ctx, r.j.ID, func(j *gantry.Job) error {
		j.Image, j.Inputs.Bases, j.Checkpoint = sw.Image, bases, gantry.CheckpointBuilt
		return nil
	})
	if err == nil {
		r.say("using sweep %s's image %s (built once for every point)", sw.ID, sw.Image)
	}
	return err
}

// pointEnded settles job id's sweep, when it is a point of one, once the
// job has ended.
func (d *Daemon) pointEnded(ctx context.Context, id string) {
	j, err := d.store.Get(ctx, id)
	if err != nil || j.Sweep == "" || !j.State.Terminal() {
		return
	}
	if err := d.settleSweep(ctx, j.Sweep); err != nil && ctx.Err() == nil {
		d.log.Error("settle sweep", "sweep", j.Sweep, "err", err)
	}
}

// settleSweeps settles the sweeps a previous gantryd left unsettled: those
// whose points all ended, or whose winner was chosen but not published.
func (d *Daemon) settleSweeps(ctx context.Context) {
	sweeps, err := d.store.ListSweeps(ctx, 0, true)
	if err != nil {
		d.log.Error("read unfinished sweeps", "err", err)
		return
	}
	for _, sw := range sweeps {
		if err := d.settleSweep(ctx, sw.ID); err != nil && ctx.Err() == nil {
			d.log.Error("settle sweep", "sweep", sw.ID, "err", err)
		}
	}
}

// settleSweep ends sweep id once all its points have ended: it chooses the
// best point that passed, records the choice (so that it is made once),
// then publishes it where the sweep pushes, and ends the sweep. With no
// point passed, the sweep ends rejected (or failed, when none trained).
func (d *Daemon) settleSweep(ctx context.Context, id string) error {
	unlock := d.sweepLocks.Lock(id)
	defer unlock()
	sw, err := d.store.GetSweep(ctx, id)
	if err != nil || sw.State.Terminal() {
		return err
	}
	jobs, err := d.sweepJobs(ctx, sw)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if !j.State.Terminal() {
			return nil // its own end settles the sweep again
		}
	}
	os.RemoveAll(d.contextDir(id))
	if sw.Winner == "" {
		obj, _ := gantry.ParseObjective(sw.Spec.Job.PromoteOn)
		w := winner(obj, jobs)
		if w == "" {
			st, why := noWinner(sw, jobs)
			return d.endSweep(ctx, id, st, why)
		}
		if sw, err = d.store.UpdateSweep(ctx, id, func(sw *gantry.Sweep) error {
			sw.Winner = w
			return nil
		}); err != nil {
			return err
		}
		d.log.Info("sweep winner chosen", "sweep", id, "job", w)
	}
	if len(sw.Spec.Job.Push) > 0 {
		if err := d.publishWinner(ctx, sw); err != nil {
			if ctx.Err() != nil {
				return err // the next gantryd pushes it
			}
			return d.endSweep(ctx, id, gantry.StateFailed, fmt.Sprintf("push the winner, job %s: %v", sw.Winner, err))
		}
	}
	return d.endSweep(ctx, id, gantry.StateSucceeded, "")
}

// noWinner says how a sweep none of whose points passed ends, and why.
func noWinner(sw *gantry.Sweep, jobs []*gantry.Job) (gantry.State, string) {
	if sw.Error != "" {
		return gantry.StateFailed, sw.Error
	}
	obj, _ := gantry.ParseObjective(sw.Spec.Job.PromoteOn)
	for _, j := range jobs {
		if j.GatePassed {
			return gantry.StateRejected, fmt.Sprintf("no point that passed its gates reported %s, the metric the winner is chosen by (--promote-on)", obj.Metric)
		}
	}
	for _, j := range jobs {
		if j.State == gantry.StateRejected {
			return gantry.StateRejected, "no point passed its gates: see each point's reason with gantry sweep show"
		}
	}
	return gantry.StateFailed, "every point failed: see each point's reason with gantry sweep show"
}

// publishWinner pushes sweep sw's winner where the sweep pushes, as gantry
// push would (job tags, provenance, promotion, outputs), its lines going to
// the winner's log.
func (d *Daemon) publishWinner(ctx context.Context, sw *gantry.Sweep) error {
	j, err := d.store.Get(ctx, sw.Winner)
	if err != nil {
		return err
	}
	logf, err := d.openLog(j.ID)
	if err != nil {
		return err
	}
	defer logf.Close()
	logf.Linef("==> the winner of sweep %s", sw.ID)
	_, err = d.publishRecorded(ctx, j, sw.Spec.Job.Push, jobReporter{log: logf})
	return err
}

// endSweep ends sweep id in state st with the reason.
func (d *Daemon) endSweep(ctx context.Context, id string, st gantry.State, why string) error {
	_, err := d.store.UpdateSweep(context.WithoutCancel(ctx), id, func(sw *gantry.Sweep) error {
		if sw.State.Terminal() {
			return nil
		}
		now := d.now().UTC()
		sw.State, sw.Error, sw.Ended = st, why, &now
		return nil
	})
	if err == nil {
		d.buildSecrets.forget(id)
		d.log.Info("sweep "+string(st), "sweep", id, "reason", why)
	}
	return err
}
