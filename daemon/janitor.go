package daemon

// The janitor: what a job leaves in the engine goes when the job ends, and
// what no job holds goes after a grace period.

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

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
	if canceled && j.Sweep == "" { // a sweep's image is every point's
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
