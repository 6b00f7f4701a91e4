package daemon

// Sweeps: a grid of jobs over one spec, whose points differ only in their
// environment. The context is unpacked once and the image built once (by
// the first point to reach its build, the others waiting for it); the
// points run like any jobs; once every point has ended, the best that
// passed is chosen, recorded, and alone published.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/gantry-ml/gantry"
)

// SubmitSweep records a sweep of spec.Job over the grid of spec.Params: one
// job per point (the cartesian product, in grid order), each given its
// parameters as environment variables, none pushing (spec.Job.Push is the
// winner's, kept in the sweep). The job spec is checked as Submit checks
// it; secrets go to every point. It returns ErrInvalid (a bad spec, grid or
// context), ErrForbidden, ErrTooLarge and ErrTooMany (the queue cannot take
// every point), as Submit does; nothing of a refused sweep is kept.
func (d *Daemon) SubmitSweep(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, tar io.Reader) (*gantry.Sweep, error) {
	points, err := grid(spec)
	if err != nil {
		return nil, err
	}
	// The spec is checked with the first point's variables, so that the
	// parameters' names are checked as --env's are.
	first := pointSpec(spec.Job, spec.Params, points[0])
	if err := d.checkSubmit(ctx, &first, secrets); err != nil {
		return nil, err
	}
	spec.Job = first
	spec.Job.Run.Env = slices.DeleteFunc(slices.Clone(first.Run.Env), func(kv string) bool {
		_, isParam := points[0][strings.SplitN(kv, "=", 2)[0]]
		return isParam
	})
	if err := d.fitsQueue(len(points)); err != nil {
		return nil, err
	}
	sw := &gantry.Sweep{ID: gantry.NewID(d.now()), Spec: spec, State: gantry.StateRunning, Created: d.now().UTC()}
	dir := d.contextDir(sw.ID)
	in, err := d.unpackContext(ctx, dir, spec.Job, tar)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	jobs := make([]*gantry.Job, len(points))
	for i, p := range points {
		js := pointSpec(spec.Job, spec.Params, p)
		js.Push = nil // only the winner pushes, once chosen
		j := gantry.NewJob(js, d.now())
		j.ImageName = sweepImageName(sw.ID)
		j.Sweep, j.Params, j.Inputs = sw.ID, p, in.Inputs
		jobs[i], sw.Jobs = j, append(sw.Jobs, j.ID)
		if len(secrets) > 0 {
			d.secrets.put(j.ID, secrets)
		}
	}
	d.holdBuildSecrets(ctx, sw.ID) // its one build uses them
	// The context is the sweep's, unpacked once: counted once.
	jobs[0].ContextSize = in.ContextSize
	if err := d.enqueueSweep(ctx, sw, jobs); err != nil {
		for _, j := range jobs {
			d.secrets.forget(j.ID)
		}
		d.buildSecrets.forget(sw.ID)
		os.RemoveAll(dir)
		return nil, err
	}
	d.log.Info("sweep submitted", "sweep", sw.ID, "points", len(jobs), "context_bytes", in.ContextSize)
	d.poke()
	return sw, nil
}

// sweepImageName is the local name of a sweep's one image.
func sweepImageName(id string) string { return "gantry/sweep:" + id }

// grid checks a sweep's parameters and returns its points in grid order
// (the last parameter varies fastest). It returns ErrInvalid.
func grid(spec gantry.SweepSpec) ([]map[string]string, error) {
	if len(spec.Params) == 0 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "a sweep needs at least one parameter: --param NAME=V1,V2,...")
	}
	n, seen := 1, map[string]bool{}
	for _, p := range spec.Params {
		if seen[p.Name] {
			return nil, gantry.Errorf(gantry.ErrInvalid, "param %s: given twice; give each parameter once, with all its values", p.Name)
		}
		seen[p.Name] = true
		for _, kv := range spec.Job.Run.Env {
			if k, _, _ := strings.Cut(kv, "="); k == p.Name {
				return nil, gantry.Errorf(gantry.ErrInvalid, "param %s: also given by --env; give it once", p.Name)
			}
		}
		if len(p.Values) == 0 || slices.Contains(p.Values, "") {
			return nil, gantry.Errorf(gantry.ErrInvalid, "param %s: want one or more non-empty values, like %s=0.1,0.01", p.Name, p.Name)
		}
		if n *= len(p.Values); n > gantry.MaxSweepPoints {
			break
		}
	}
	if n > gantry.MaxSweepPoints {
		return nil, gantry.Errorf(gantry.ErrInvalid, "the grid has over %d points, the most a sweep may have: give fewer values", gantry.MaxSweepPoints)
	}
	points := []map[string]string{{}}
	for _, p := range spec.Params {
		var next []map[string]string
		for _, pt := range points {
			for _, v := range p.Values {
				q := maps.Clone(pt)
				q[p.Name] = v
				next = append(next, q)
			}
		}
		points = next
	}
	return points, nil
}

// pointSpec is job's spec for one point: its environment gains NAME=VALUE
// for each parameter, in the parameters' order.
func pointSpec(job gantry.Spec, params []gantry.Param, point map[string]string) gantry.Spec {
	job.Run.Env = slices.Clone(job.Run.Env)
	for _, p := range params {
		job.Run.Env = append(job.Run.Env, p.Name+"="+point[p.Name])
	}
	return job
}

// fitsQueue says whether n more jobs fit in the queue (ErrTooMany when
// not).
func (d *Daemon) fitsQueue(n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fitsN(n, 0)
}

// enqueueSweep records sweep sw and its jobs, counted in the queue.
func (d *Daemon) enqueueSweep(ctx context.Context, sw *gantry.Sweep, jobs []*gantry.Job) error {
	for _, j := range jobs {
		d.addWebhooks(j)
	}
	d.mu.Lock()
	if err := d.fitsN(len(jobs), jobs[0].ContextSize); err != nil {
		d.mu.Unlock()
		return err
	}
	for _, j := range jobs {
		d.queued[j.ID] = j.ContextSize
		d.queuedBytes += j.ContextSize
	}
	d.mu.Unlock()
	err := d.store.CreateSweep(ctx, sw, jobs)
	if err != nil {
		d.mu.Lock()
		for _, j := range jobs {
			d.dequeue(j.ID)
		}
		d.mu.Unlock()
	}
	return err
}

// GetSweep returns sweep id with its leaderboard. It returns ErrNotFound.
func (d *Daemon) GetSweep(ctx context.Context, id string) (*gantry.SweepView, error) {
	sw, err := d.store.GetSweep(ctx, id)
	if err != nil {
		return nil, err
	}
	jobs, err := d.sweepJobs(ctx, sw)
	if err != nil {
		return nil, err
	}
	obj, _ := gantry.ParseObjective(sw.Spec.Job.PromoteOn) // checked at submit
	return &gantry.SweepView{Sweep: *sw, Objective: obj.String(), Points: leaderboard(obj, jobs)}, nil
}

// ListSweeps returns the sweeps, newest first (up to limit; all when 0).
func (d *Daemon) ListSweeps(ctx context.Context, limit int) ([]*gantry.Sweep, error) {
	return d.store.ListSweeps(ctx, limit, false)
}

// sweepJobs reads sweep sw's points, in grid order.
func (d *Daemon) sweepJobs(ctx context.Context, sw *gantry.Sweep) ([]*gantry.Job, error) {
	jobs := make([]*gantry.Job, len(sw.Jobs))
	for i, id := range sw.Jobs {
		j, err := d.store.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("sweep %s: %w", sw.ID, err)
		}
		jobs[i] = j
	}
	return jobs, nil
}

// leaderboard ranks jobs (in grid order): those that passed and reported
// the objective's metric first, best first (ties in grid order), then the
// rest in grid order.
func leaderboard(obj gantry.Objective, jobs []*gantry.Job) []gantry.SweepPoint {
	points := make([]gantry.SweepPoint, len(jobs))
	for i, j := range jobs {
		points[i] = gantry.SweepPoint{Job: j.ID, Params: j.Params, State: j.State, Metrics: j.Metrics, Passed: j.GatePassed, Error: j.Error}
	}
	ranked := func(p gantry.SweepPoint) bool {
		_, ok := p.Metrics.Value(obj.Metric)
		return p.Passed && ok
	}
	slices.SortStableFunc(points, func(a, b gantry.SweepPoint) int {
		ra, rb := ranked(a), ranked(b)
		switch {
		case ra && !rb:
			return -1
		case rb && !ra:
			return 1
		case !ra:
			return 0
		}
		va, _ := a.Metrics.Value(obj.Metric)
		vb, _ := b.Metrics.Value(obj.Metric)
		switch g := obj.Gain(va, vb); {
		case g > 0:
			return -1
		case g < 0:
			return 1
		}
		return 0
	})
	return points
}

// winner is the best point that passed, by obj, or "" when none did.
func winner(obj gantry.Objective, jobs []*gantry.Job) string {
	points := leaderboard(obj, jobs)
	if len(points) == 0 || !points[0].Passed {
		return ""
	}
	if _, ok := points[0].Metrics.Value(obj.Metric); !ok {
		return ""
	}
	return points[0].Job
}

// CancelSweep cancels every point of sweep id not yet ended, and ends the
// sweep canceled (its winner, if already chosen, is not pushed). Cancelling
// a canceled sweep is harmless. It returns the sweep, ErrNotFound, or
// ErrConflict for a sweep that ended otherwise.
func (d *Daemon) CancelSweep(ctx context.Context, id string) (*gantry.Sweep, error) {
	sw, err := d.store.UpdateSweep(ctx, id, func(sw *gantry.Sweep) error {
		switch {
		case sw.State == gantry.StateCanceled:
			return nil
		case sw.State.Terminal():
			return gantry.Errorf(gantry.ErrConflict, "sweep %s already %s: there is nothing to cancel", id, sw.State)
		}
		now := d.now().UTC()
		sw.State, sw.Error, sw.Ended = gantry.StateCanceled, errCanceled.Error(), &now
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, jid := range sw.Jobs {
		if _, err := d.Cancel(ctx, jid); err != nil && !errors.Is(err, gantry.ErrConflict) {
			d.log.Warn("cancel a sweep's point", "sweep", id, "job", jid, "err", err)
		}
	}
	os.RemoveAll(d.contextDir(id))
	d.log.Info("sweep canceled", "sweep", id)
	return sw, nil
}
