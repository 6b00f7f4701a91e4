package daemon

// Recovery: what a gantryd that stopped (or was killed) left is readied
// before the API serves.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gantry-ml/gantry"
)

// Prepare readies what a previous gantryd left before the API serves: the
// log of every job caught training is cut back to where training began (its
// container's log is replayed from the start when the job resumes), and
// build contexts of jobs that no longer need them are removed, and so are
// outputs caught half copied.
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
		if j.State == gantry.StateRunning && !j.Reached(gantry.CheckpointExited) {
			if err := d.cutTrainingLog(j); err != nil {
				return fmt.Errorf("recover job %s: %w", j.ID, err)
			}
		}
	}
	entries, err := os.ReadDir(filepath.Join(d.cfg.DataDir, "contexts"))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, e := range entries {
		if sw, err := d.store.GetSweep(ctx, e.Name()); err == nil && !sw.State.Terminal() && sw.Image == "" && sw.Error == "" {
			continue // a sweep's context, kept until its one build
		}
		j, err := d.store.Get(ctx, e.Name())
		if err != nil || j.State.Terminal() || j.Reached(gantry.CheckpointBuilt) {
			os.RemoveAll(d.contextDir(e.Name()))
		}
	}
	d.removePartialBlobs()
	return nil
}

// cutTrainingLog cuts job j's log back to where its container's output
// starts, as the record says (a record from before it said so: to the
// training marker, which gantryd marks as its own).
func (d *Daemon) cutTrainingLog(j *gantry.Job) error {
	if j.TrainLogOffset <= 0 {
		return cutLog(d.LogPath(j.ID), trainingMarker(j.ContainerID))
	}
	return os.Truncate(d.LogPath(j.ID), j.TrainLogOffset)
}
