package daemon

// Retention: finished jobs go, with their logs, contexts, metric series,
// kept outputs no other job references and the images gantry built for
// them, so that a gantryd that runs for months does not fill its disk.
// Kept whatever their age: jobs not finished, the newest Keep finished jobs
// of each image name, jobs that hold a promoted tag (the newest promoted
// for each tag), and the points of sweeps not finished; a finished sweep
// goes whole, once none of its points is kept.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gantry-ml/gantry"
)

// Retention is gantryd's policy on finished jobs.
type Retention struct {
	// Auto applies the policy on start and after each job ends; without
	// it only gantry prune removes jobs.
	Auto bool
	// Age is how long a finished job is kept at least (gantryd --retain);
	// PerImage how many of the newest finished jobs of each image name
	// are kept whatever their age (--retain-per-image).
	Age      time.Duration
	PerImage int
	// BuildCacheKeep bounds the engine's build cache, in bytes; 0 leaves
	// it as it is.
	BuildCacheKeep int64
}

// ImageCleaner is the engine whose images gantry builds and whose build
// cache it bounds (runner.Engine).
type ImageCleaner interface {
	// ImageSize returns an image's ID and size; ErrNotFound when gone.
	ImageSize(ctx context.Context, ref string) (string, int64, error)
	// ImageOwnSizes returns each image's own bytes, by ID: what
	// removing it alone frees.
	ImageOwnSizes(ctx context.Context) (map[string]int64, error)
	// RemoveUnusedImage removes a name, never forcing: ErrConflict when
	// a container uses the image.
	RemoveUnusedImage(ctx context.Context, ref string) (bool, error)
	// ImageInUse reports whether a container uses an image, for a dry run
	// to say what RemoveUnusedImage would refuse.
	ImageInUse(ctx context.Context, ref string) (bool, error)
	PruneBuildCache(ctx context.Context, keep int64) (int64, error)
}

// jobDeleter is the store's removal of finished jobs (store.Store.Delete).
type jobDeleter interface {
	Delete(ctx context.Context, ids []string) ([]string, error)
}

// Delete removes finished jobs from the store and wakes the event streams,
// which see their "removed" events.
func (s *notifyingStore) Delete(ctx context.Context, ids []string) ([]string, error) {
	dl, ok := s.jobStore.(jobDeleter)
	if !ok {
		return nil, gantry.Errorf(gantry.ErrUnavailable, "this store cannot remove jobs")
	}
	removed, err := dl.Delete(ctx, ids)
	s.changed.notify()
	return removed, err
}

// Prune removes the finished jobs o selects (its bounds default to
// gantryd's retention policy) with what they leave on disk and in the
// engine, and lists what it removed; with o.DryRun it lists what it would
// remove. It returns ErrInvalid for a negative bound.
func (d *Daemon) Prune(ctx context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error) {
	d.pruning.Lock()
	defer d.pruning.Unlock()
	return d.prunePass(ctx, o)
}

// retainPace bounds the time automatic passes spend reading records: a
// pass whose read took t is followed by none for retainPace × t (a few
// hundred records take milliseconds, and a pass follows every job; a month
// of a busy machine's records, less often). What a pass removes is not
// counted: that work is owed whenever it is done.
const retainPace = 10

// retainClock is when the last automatic pass ended, how long its read of
// the records took, and whether a pass waits for its turn (d.pruning).
type retainClock struct {
	ended   time.Time
	read    time.Duration
	waiting bool
}

// retain applies the retention policy, when gantryd applies it on its
// own; a pass already under way is enough, and so is one that ended
// lately (retainPace).
func (d *Daemon) retain(ctx context.Context) {
	if !d.cfg.Retention.Auto || !d.pruning.TryLock() {
		return
	}
	defer d.pruning.Unlock()
	if wait := retainPace*d.retained.read - time.Since(d.retained.ended); wait > 0 {
		d.retainLater(ctx, wait)
		return
	}
	defer func() { d.retained.ended = time.Now() }()
	rep, err := d.prunePass(ctx, gantry.PruneOptions{})
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("retention", "err", err)
		}
		return
	}
	for _, p := range rep.Problems {
		d.log.Warn("retention", "problem", p)
	}
	if len(rep.Jobs) > 0 || rep.Bytes > 0 {
		d.log.Info("retention removed finished jobs", "jobs", len(rep.Jobs), "images", len(rep.Images),
			"files", len(rep.Files), "freed", gantry.HumanBytes(rep.Bytes), "kept", rep.Kept)
	}
}

// retainLater makes one pass after wait, unless one already waits; the
// jobs that ended meanwhile are pruned even if no job ends after them.
// d.pruning must be held.
func (d *Daemon) retainLater(ctx context.Context, wait time.Duration) {
	if d.retained.waiting {
		return
	}
	d.retained.waiting = true
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.pruning.Lock()
		d.retained.waiting = false
		d.pruning.Unlock()
		d.retain(ctx)
	}()
}

// retainInBackground applies the retention policy once, beside the
// scheduler (on start).
func (d *Daemon) retainInBackground(ctx context.Context) {
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.retain(ctx) }()
}

// prunePass is Prune with d.pruning held.
func (d *Daemon) prunePass(ctx context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error) {
	age, keep := d.cfg.Retention.Age, d.cfg.Retention.PerImage
	if o.OlderThan != nil {
		age = time.Duration(*o.OlderThan)
	}
	if o.Keep != nil {
		keep = *o.Keep
	}
	if age < 0 || keep < 0 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "prune: older than %v, keep %d: neither may be negative", age, keep)
	}
	rep, err := d.pruneJobs(ctx, o, age, keep)
	if err != nil {
		return nil, err
	}
	d.pruneBuildCache(ctx, rep)
	return rep, nil
}

// pruneJobs removes the jobs a prune selects, holding off jobs that keep
// outputs: the records it reads list every output a job holds.
func (d *Daemon) pruneJobs(ctx context.Context, o gantry.PruneOptions, age time.Duration, keep int) (*gantry.PruneReport, error) {
	d.outputs.Lock()
	defer d.outputs.Unlock()
	start := time.Now()
	jobs, err := d.allJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	d.retained.read = time.Since(start)
	open, err := d.store.ListSweeps(ctx, 0, true)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	busy := d.busyJobs()
	for _, sw := range open {
		busy[sw.ID] = true
	}
	hold := func(j *gantry.Job) bool { return busy[j.ID] || (j.Sweep != "" && busy[j.Sweep]) }
	remove, kept := planPrune(jobs, hold, d.now().Add(-age), keep)
	rep := &gantry.PruneReport{
		DryRun: o.DryRun, OlderThan: gantry.Duration(age), Keep: keep,
		Jobs: []gantry.PrunedJob{}, Files: []gantry.PrunedFile{}, Images: []gantry.PrunedImage{},
	}
	remove, kept = d.pruneImages(ctx, rep, remove, kept)
	d.pruneFiles(rep, remove, kept)
	if !o.DryRun && len(remove) > 0 {
		ids := make([]string, len(remove))
		for i, j := range remove {
			ids[i] = j.ID
		}
		if _, err := d.store.(jobDeleter).Delete(context.WithoutCancel(ctx), ids); err != nil {
			return nil, fmt.Errorf("prune: %w", err)
		}
	}
	for _, j := range remove {
		rep.Jobs = append(rep.Jobs, gantry.PrunedJob{ID: j.ID, Name: j.Name(), State: j.State, Finished: j.Times.Finished})
	}
	rep.Kept = 0
	for _, j := range kept {
		if j.State.Terminal() {
			rep.Kept++
		}
	}
	return rep, nil
}

// allJobs reads every record, newest first.
func (d *Daemon) allJobs(ctx context.Context) ([]*gantry.Job, error) {
	var all []*gantry.Job
	f := gantry.JobFilter{Limit: 1000}
	for {
		page, next, err := d.store.List(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		f.Before = next
	}
}

// busyJobs are the jobs this process runs or holds in its queue.
func (d *Daemon) busyJobs() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	busy := make(map[string]bool, len(d.active)+len(d.queued))
	for id := range d.active {
		busy[id] = true
	}
	for id := range d.queued {
		busy[id] = true
	}
	return busy
}

// planPrune splits jobs (newest first) into those a prune removes and
// those it keeps: kept are the jobs not finished or busy (busy says so,
// for the points of sweeps not finished too), the newest job that promoted
// each tag, the newest keep finished jobs of each image name, the jobs
// that finished after cutoff, and every point of a sweep one of whose
// points is kept (a sweep goes whole, its leaderboard with it).
func planPrune(jobs []*gantry.Job, busy func(*gantry.Job) bool, cutoff time.Time, keep int) (remove, kept []*gantry.Job) {
	champion := map[string]bool{} // tags whose holder was seen
	perName := map[string]int{}
	keptSweep := map[string]bool{}
	for _, j := range jobs {
		hold := busy(j) || !j.State.Terminal()
		for _, p := range j.Promotions {
			if p.Promoted && !champion[p.Tag] {
				champion[p.Tag], hold = true, true
			}
		}
		if j.State.Terminal() {
			perName[j.Name()]++
			hold = hold || perName[j.Name()] <= keep || finishedAt(j).After(cutoff)
		}
		if hold {
			kept = append(kept, j)
			keptSweep[j.Sweep] = true
		} else {
			remove = append(remove, j)
		}
	}
	var out []*gantry.Job
	for _, j := range remove {
		if j.Sweep != "" && keptSweep[j.Sweep] {
			kept = append(kept, j)
		} else {
			out = append(out, j)
		}
	}
	return out, kept
}

// finishedAt is when job j finished (a record without the time: when it
// was created).
func finishedAt(j *gantry.Job) time.Time {
	if j.Times.Finished != nil {
		return *j.Times.Finished
	}
	return j.Times.Created
}

// pruneImages removes the engine images of the jobs in remove (lists them,
// for a dry run), except those a kept job's record names too; a job whose
// image the engine refuses to remove (a container uses it) is kept, and
// said so in rep.Problems. It returns remove and kept as they end up.
func (d *Daemon) pruneImages(ctx context.Context, rep *gantry.PruneReport, remove, kept []*gantry.Job) ([]*gantry.Job, []*gantry.Job) {
	if d.cfg.Cleaner == nil {
		return remove, kept
	}
	held := map[string]bool{}
	for _, j := range kept {
		held[j.ImageName], held[j.Image] = true, true
	}
	seen := map[string]bool{}
	var (
		out []*gantry.Job
		own map[string]int64 // read once, when there is an image to remove
	)
	for _, j := range remove {
		ref := j.ImageName
		if ref == "" || held[ref] || (j.Image != "" && held[j.Image]) || seen[ref] {
			out = append(out, j)
			continue
		}
		seen[ref] = true
		id, _, err := d.cfg.Cleaner.ImageSize(ctx, ref)
		if err == nil && own == nil {
			if own, err = d.cfg.Cleaner.ImageOwnSizes(ctx); err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("sizes of images: %v", err))
				own, err = map[string]int64{}, nil
			}
		}
		size := own[id]
		switch {
		case errors.Is(err, gantry.ErrNotFound):
			out = append(out, j)
			continue
		case err == nil && held[id]:
			out = append(out, j) // another kept job's image, by another name
			continue
		case err == nil && rep.DryRun:
			var used bool
			if used, err = d.cfg.Cleaner.ImageInUse(ctx, ref); err == nil && used {
				err = gantry.Errorf(gantry.ErrConflict, "image %s is used by a container", ref)
			}
		case err == nil:
			var deleted bool
			if deleted, err = d.cfg.Cleaner.RemoveUnusedImage(ctx, ref); err == nil && !deleted {
				size = 0 // only a name went: the image has others
			}
		}
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("job %s kept: its image %s: %v", j.ID, ref, err))
			kept = append(kept, j)
			continue
		}
		rep.Images = append(rep.Images, gantry.PrunedImage{Ref: ref, ID: id, Job: j.ID, Bytes: size})
		rep.Bytes += size
		out = append(out, j)
	}
	return out, kept
}

// pruneBuildCache cuts the engine's build cache down to its bound.
func (d *Daemon) pruneBuildCache(ctx context.Context, rep *gantry.PruneReport) {
	keep := d.cfg.Retention.BuildCacheKeep
	if rep.DryRun || keep <= 0 || d.cfg.Cleaner == nil {
		return
	}
	n, err := d.cfg.Cleaner.PruneBuildCache(ctx, keep)
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("build cache: %v", err))
		return
	}
	rep.BuildCache = n
	rep.Bytes += n
}
