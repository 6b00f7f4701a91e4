package daemon

// The scheduler: jobs start, oldest first, while slots are free.

import (
	"context"
	"fmt"
	"time"

	"github.com/gantry-ml/gantry"
)

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
	d.retainInBackground(ctx)
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.settleSweeps(ctx) }()
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.deliverWebhooks(ctx) }()
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
		d.prune(id)
		d.pointEnded(ctx, id)
		d.retain(ctx)
	}()
}

// prune brings the blob cache back within its bounds once job id has ended
// and let go of its image.
func (d *Daemon) prune(id string) {
	if d.cfg.Prune == nil {
		return
	}
	if n, err := d.cfg.Prune(); err != nil {
		d.log.Warn("prune the blob cache", "job", id, "err", err)
	} else if n > 0 {
		d.log.Info("pruned the blob cache", "job", id, "freed", gantry.HumanBytes(n))
	}
}
