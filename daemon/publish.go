package daemon

// Publishing: the one path by which a job's image reaches registries, for
// a job that passed its gate and for gantry push: the references, the
// job-<id> tags, the provenance record, the champion rule.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/layers"
)

// Push pushes a finished job's image again: to refs, or when refs is empty to
// the job's own --push references, the way the job's own push did (job tags,
// provenance, the champion rule: see publish), within the job's push
// timeout; rep takes its progress. Only a job whose training passed the gate may be pushed. It is
// idempotent, and records each push in the job. It returns ErrNotFound (no
// such job, or its image is gone), ErrConflict (the job has not passed, or
// has not ended), ErrInvalid (a bad reference) and ErrUnavailable (the
// registry failed).
func (d *Daemon) Push(ctx context.Context, id string, refs []string, rep gantry.Reporter) (*gantry.Job, error) {
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
	j, err = d.publishRecorded(ctx, j, refs, rep)
	if err != nil && gantry.Kind(err) == nil {
		err = gantry.Errorf(gantry.ErrUnavailable, "%v", err)
	}
	return j, err
}

// publish pushes job j's image to refs and to the immutable job-<id> tag of
// each of their repositories (so every result can be found and rolled back
// to), records the pushes, attaches the provenance record beside the image
// in each repository, and, for a job that promotes, moves its tag there when
// the champion rule says so. The image pushed carries the job's outputs as
// a layer, or has them beside it as an artifact, as the job asked (see
// ship.go). It is the one path to a registry: a job's own
// push and gantry push both take it. upload, when not nil, is the job's
// upload of its blobs, waited for first. It returns the provenance record
// attached, for the caller to record with what it records next (a job's
// end, or gantry push's own record): one commit fewer on the way.
func (d *Daemon) publish(ctx context.Context, j *gantry.Job, refs []string, upload *earlyUpload, rep gantry.Reporter) (*gantry.Job, *gantry.Provenance, error) {
	refs = append(append([]string(nil), refs...), jobTags(j.ID, refs)...)
	rep.Linef("==> pushing to %v", refs)
	pctx, cancel := withLimit(ctx, "push", j.Spec.Timeouts.Push)
	defer cancel()
	upload.wait(pctx)
	img, err := d.image(pctx, j)
	if err != nil {
		return j, nil, phaseErr(ctx, pctx, err)
	}
	defer layers.Release(img)
	built, err := img.Digest()
	if err != nil {
		return j, nil, phaseErr(ctx, pctx, fmt.Errorf("job %s: read its image's digest: %w", j.ID, err))
	}
	if j, err = d.ensureLayer(pctx, j); err != nil {
		return j, nil, phaseErr(ctx, pctx, err)
	}
	ship, err := d.shipImage(j, img)
	if err != nil {
		return j, nil, phaseErr(ctx, pctx, fmt.Errorf("job %s: add its outputs to its image: %w", j.ID, err))
	}
	pushes, err := d.pusher.Push(pctx, ship, refs, rep)
	// Record what moved, even when the rest failed.
	if j, err = d.recordPushes(ctx, j.ID, pushes, err); err != nil {
		return j, nil, phaseErr(ctx, pctx, err)
	}
	if shipsArtifact(j) {
		if err = d.attachOutputs(pctx, j, pushes, rep); err != nil {
			return j, nil, phaseErr(ctx, pctx, err)
		}
	}
	// The provenance record goes beside the image, by digest: the image's
	// own digest does not change.
	prov, err := d.attachProvenance(pctx, j, pushes, built.String(), rep)
	if err != nil {
		return j, nil, phaseErr(ctx, pctx, err)
	}
	if j.Spec.Promote != "" {
		if j, err = d.promote(pctx, j, pushes, rep); err != nil {
			return j, nil, phaseErr(ctx, pctx, err)
		}
	}
	return j, prov, nil
}

// publishRecorded is publish for a job that has ended (gantry push, a
// sweep's winner): the provenance is recorded on its own.
func (d *Daemon) publishRecorded(ctx context.Context, j *gantry.Job, refs []string, rep gantry.Reporter) (*gantry.Job, error) {
	j, prov, err := d.publish(ctx, j, refs, nil, rep)
	if err != nil {
		return j, err
	}
	return d.store.Update(context.WithoutCancel(ctx), j.ID, func(j *gantry.Job) error {
		j.Provenance = prov
		return nil
	})
}

// image reads job j's image for a push: by its name, or, once that is gone
// from the engine, by its ID (its blobs may still be kept). It returns
// ErrNotFound when neither can be read.
func (d *Daemon) image(ctx context.Context, j *gantry.Job) (v1.Image, error) {
	img, err := d.source(ctx, j.ImageName)
	if errors.Is(err, gantry.ErrNotFound) && j.Image != "" {
		img, err = d.source(ctx, j.Image)
	}
	if errors.Is(err, gantry.ErrNotFound) {
		return nil, gantry.Errorf(gantry.ErrNotFound, "job %s: its image %s is no longer in the engine, nor are all its layers kept: %v", j.ID, j.ImageName, err)
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: read its image %s: %w", j.ID, j.ImageName, err)
	}
	return img, nil
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
	return d.startUpload(ctx, j, "image layers uploaded during training", func(ctx context.Context) error {
		img, err := d.image(ctx, j)
		if err != nil {
			return err
		}
		defer layers.Release(img)
		return d.pusher.Upload(ctx, img, j.Spec.Push)
	})
}

// startUpload runs upload beside job j's run, logging how it ended (done
// says what it did).
func (d *Daemon) startUpload(ctx context.Context, j *gantry.Job, done string, upload func(context.Context) error) *earlyUpload {
	uctx, cancel := context.WithCancel(ctx)
	u := &earlyUpload{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		start := time.Now()
		if err := upload(uctx); err != nil {
			if uctx.Err() == nil {
				d.log.Warn("early upload failed; the push will send what is missing", "job", j.ID, "err", err)
			}
			return
		}
		d.log.Info(done, "job", j.ID, "took", time.Since(start).Round(time.Millisecond))
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

// jobTags returns REPO:job-<id> for each repository of refs.
func jobTags(id string, refs []string) []string {
	var tags []string
	seen := map[string]bool{}
	for _, r := range refs {
		if repo := gantry.Repository(r); !seen[repo] {
			seen[repo] = true
			tags = append(tags, repo+":job-"+id)
		}
	}
	return tags
}

// perRepository returns the first of pushes to each repository.
func perRepository(pushes []gantry.Push) []gantry.Push {
	var out []gantry.Push
	seen := map[string]bool{}
	for _, p := range pushes {
		if repo := gantry.Repository(p.Ref); !seen[repo] {
			seen[repo] = true
			out = append(out, p)
		}
	}
	return out
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

// attachProvenance pushes the job's provenance as an artifact referring to
// the image in each repository of pushes, and returns it (to be recorded by
// the caller). built is the digest of the image as built; the one pushed is
// pushes'.
func (d *Daemon) attachProvenance(ctx context.Context, j *gantry.Job, pushes []gantry.Push, built string, rep gantry.Reporter) (*gantry.Provenance, error) {
	prov := gantry.NewProvenance(j)
	prov.Built = built
	if len(pushes) > 0 {
		prov.Shipped = pushes[0].Digest
	}
	data, err := json.Marshal(prov)
	if err != nil {
		return nil, err
	}
	for _, p := range perRepository(pushes) {
		a, err := d.pusher.Attach(ctx, p.Ref, p.Digest, gantry.ProvenanceType, data)
		if err != nil {
			return nil, fmt.Errorf("attach the provenance record: %w", err)
		}
		rep.Linef("provenance record %s attached to %s@%s", a, gantry.Repository(p.Ref), p.Digest)
	}
	return prov, nil
}

// attachOutputs pushes job j's output files as an OCI artifact (type
// gantry.OutputsType, a layer per file titled by its path) referring to
// its image in each repository of pushes.
func (d *Daemon) attachOutputs(ctx context.Context, j *gantry.Job, pushes []gantry.Push, rep gantry.Reporter) error {
	files, err := d.outputFiles(j)
	if err != nil {
		return err
	}
	for _, p := range perRepository(pushes) {
		a, err := d.pusher.AttachFiles(ctx, p.Ref, p.Digest, gantry.OutputsType, files)
		if err != nil {
			return fmt.Errorf("attach the outputs: %w", err)
		}
		rep.Linef("outputs (%d files, %d bytes) attached as %s to %s@%s", len(files), j.Outputs.Bytes, a, gantry.Repository(p.Ref), p.Digest)
	}
	return nil
}

// promote moves the job's --promote tag, in each repository of pushes, to
// its image when its value of the --promote-on metric beats, in that
// metric's direction, the image the tag holds now, as that image's
// provenance record in the registry says. Jobs promoting the same tag take
// turns, so the better one ends on the tag whatever the order. A job that
// reported no value of the metric moves no tag: the decision says why. The
// decisions are recorded, replacing earlier ones on the same tag.
func (d *Daemon) promote(ctx context.Context, j *gantry.Job, pushes []gantry.Push, rep gantry.Reporter) (*gantry.Job, error) {
	o, err := gantry.ParseObjective(j.Spec.PromoteOn)
	if err != nil {
		return j, err // checked at submit
	}
	v, ok := j.Metrics.Value(o.Metric)
	var decisions []gantry.Promotion
	for _, p := range perRepository(pushes) {
		ref := gantry.Repository(p.Ref) + ":" + j.Spec.Promote
		dec := gantry.Promotion{Tag: ref, Reason: fmt.Sprintf("not promoted: the job reported no %s, the metric it promotes on (%s)", o.Metric, o)}
		if ok {
			if dec, err = d.promoteOne(ctx, ref, p, o, v, j.Spec.MinImprovement); err != nil {
				return j, err
			}
		}
		rep.Linef("==> %s: %s", ref, dec.Reason)
		decisions = append(decisions, dec)
	}
	return d.store.Update(context.WithoutCancel(ctx), j.ID, func(j *gantry.Job) error {
		j.Promotions = mergePromotions(j.Promotions, decisions)
		return nil
	})
}

// mergePromotions adds decisions to have, replacing earlier ones on the
// same tag.
func mergePromotions(have, decisions []gantry.Promotion) []gantry.Promotion {
	out := slices.DeleteFunc(slices.Clone(have), func(h gantry.Promotion) bool {
		return slices.ContainsFunc(decisions, func(d gantry.Promotion) bool { return d.Tag == h.Tag })
	})
	return append(out, decisions...)
}

// promoteOne decides on tag ref for the image pushed as p, whose value of
// o's metric is v, against the image the tag holds now (see promote), and
// moves the tag when the candidate wins.
func (d *Daemon) promoteOne(ctx context.Context, ref string, p gantry.Push, o gantry.Objective, v, minImprovement float64) (gantry.Promotion, error) {
	unlock := d.tagLocks.Lock(ref)
	defer unlock()
	var champion *float64
	lacks := false // the champion's record has no value of the metric
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
			if cv, ok := prov.Metrics.Value(o.Metric); ok {
				champion = &cv
			} else {
				lacks = true
			}
		}
	}
	dec := gantry.Decide(ref, o, v, champion, minImprovement)
	if lacks {
		dec.Reason = fmt.Sprintf("promoted: the provenance record of the image the tag held has no %s", o.Metric)
	}
	if dec.Promoted {
		if err := d.pusher.Tag(ctx, ref, p.Digest); err != nil {
			return gantry.Promotion{}, err
		}
	}
	return dec, nil
}
