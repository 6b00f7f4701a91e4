package daemon

// Staging: on a backend whose nodes pull the image (a swarm), the built
// image goes to the staging repository before training, and the job runs it
// by digest.

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/layers"
)

// buildStage is where a build pushes its image by digest: the staging
// repository, when the builder can push (a standalone buildkitd).
func (d *Daemon) buildStage() string {
	if d.cfg.BuildStages {
		return d.cfg.Stage
	}
	return ""
}

// staged reports whether image is a digest reference (repo@sha256:...): a
// build that pushed by digest (a standalone buildkitd with a staging
// repository) made it so already.
func staged(image string) bool { return strings.Contains(image, "@sha256:") }

// stage pushes job j's image, built into the engine, to the staging
// repository (tagged with the job's ID, so the registry keeps it until it
// is pruned) and returns the digest reference its nodes pull. With no
// staging repository, or an image staged by its build, it returns image.
func (r *jobRun) stage(ctx context.Context, image string) (string, error) {
	d := r.d
	if d.cfg.Stage == "" || staged(image) {
		return image, nil
	}
	repo, err := name.NewRepository(d.cfg.Stage)
	if err != nil {
		return "", gantry.Errorf(gantry.ErrInvalid, "staging repository %q: %v", d.cfg.Stage, err)
	}
	img, err := d.source(ctx, r.j.ImageName)
	if err != nil {
		return "", fmt.Errorf("stage the image: read %s: %w", r.j.ImageName, err)
	}
	defer layers.Release(img)
	r.say("staging the image in %s, for the nodes to pull", d.cfg.Stage)
	pushes, err := d.pusher.Push(ctx, img, []string{repo.Tag(r.j.ID).String()}, jobReporter{log: r.log})
	if err != nil {
		return "", fmt.Errorf("stage the image in %s: %w", d.cfg.Stage, err)
	}
	return repo.Digest(pushes[0].Digest).String(), nil
}
