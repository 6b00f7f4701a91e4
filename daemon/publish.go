package daemon

// Publishing: the one path by which a job's image reaches registries, for
// a job that passed its gate and for gantry push: the references, the
// job-<id> tags, the provenance record, the champion rule.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/joblog"
	"github.com/gantry-ml/gantry/push"
)

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
	defer push.Release(img)
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
			push.Release(img)
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
