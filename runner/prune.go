package runner

// What a prune asks of the engine: the size of an image gantry built, its
// removal only when nothing else uses it, and the build cache cut down to a
// bound.

import (
	"context"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// ImageSize returns the ID of the local image ref and its size as the
// engine reports it (layers shared with other images included). It
// returns ErrNotFound when the engine has no such image.
func (e *Engine) ImageSize(ctx context.Context, ref string) (string, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ImageInspect(ctx, ref)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return "", 0, gantry.Errorf(gantry.ErrNotFound, "image %s: not in the engine", ref)
		}
		return "", 0, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return res.ID, res.Size, nil
}

// RemoveUnusedImage removes the name ref; the image goes with it when no
// other name holds it, and deleted says whether it went. Unlike
// RemoveImage it never forces: the engine refuses when a container
// (running or stopped) uses the image, and so does RemoveUnusedImage, with
// an error of kind ErrConflict. A name that is gone is not an error.
func (e *Engine) RemoveUnusedImage(ctx context.Context, ref string) (deleted bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	switch {
	case err == nil:
		for _, it := range res.Items {
			deleted = deleted || it.Deleted != ""
		}
		return deleted, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	case cerrdefs.IsConflict(err):
		return false, gantry.Errorf(gantry.ErrConflict, "image %s is in use: %v", ref, err)
	}
	return false, fmt.Errorf("remove image %s: %w", ref, err)
}

// buildPruneTimeout bounds a build cache prune, which walks the cache.
const buildPruneTimeout = 5 * time.Minute

// PruneBuildCache removes the engine's unused build cache, least recently
// used first, until what is left fits in keep bytes (keep > 0; the
// engine's keep-storage, reserved-space from API 1.48), and returns the
// bytes freed. It returns no error kind.
func (e *Engine) PruneBuildCache(ctx context.Context, keep int64) (int64, error) {
	if keep <= 0 {
		return 0, gantry.Errorf(gantry.ErrInvalid, "build cache bound %d: must be positive (0 would remove it all)", keep)
	}
	ctx, cancel := context.WithTimeout(ctx, buildPruneTimeout)
	defer cancel()
	res, err := e.c.BuildCachePrune(ctx, client.BuildCachePruneOptions{ReservedSpace: keep})
	if err != nil {
		return 0, fmt.Errorf("prune the build cache: %w", err)
	}
	return int64(res.Report.SpaceReclaimed), nil
}

// ImageInUse reports whether a container (running or not) uses the image
// ref or an image built on it. It returns no error kind.
func (e *Engine) ImageInUse(ctx context.Context, ref string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := e.c.ContainerList(ctx, client.ContainerListOptions{All: true, Limit: 1, Filters: client.Filters{}.Add("ancestor", ref)})
	if err != nil {
		return false, fmt.Errorf("list the containers of image %s: %w", ref, err)
	}
	return len(res.Items) > 0, nil
}

// dfTimeout bounds a disk usage query, which sums every image's layers.
const dfTimeout = 2 * time.Minute

// ImageOwnSizes returns, for each local image ID, the bytes of its layers
// that no other image shares (what removing it alone frees), as the
// engine's disk usage reports them. It returns no error kind.
func (e *Engine) ImageOwnSizes(ctx context.Context) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, dfTimeout)
	defer cancel()
	du, err := DiskUsage(ctx, e.c, client.DiskUsageOptions{Images: true, Verbose: true})
	if err != nil {
		return nil, err
	}
	sizes := make(map[string]int64, len(du.Images.Items))
	for _, im := range du.Images.Items {
		sizes[im.ID] = im.Size - max(im.SharedSize, 0)
	}
	return sizes, nil
}

// DiskUsage asks c for its disk usage; an engine that answers that one is
// already being computed (it computes one at a time: Docker 20.10 says so
// with a 500, newer engines with a 409) is asked again, until ctx ends. It
// returns no error kind.
func DiskUsage(ctx context.Context, c *client.Client, o client.DiskUsageOptions) (client.DiskUsageResult, error) {
	for {
		du, err := c.DiskUsage(ctx, o)
		if err == nil || !(cerrdefs.IsConflict(err) || cerrdefs.IsInternal(err)) {
			if err != nil {
				err = fmt.Errorf("engine disk usage: %w", err)
			}
			return du, err
		}
		select {
		case <-ctx.Done():
			return du, fmt.Errorf("engine disk usage: %w (%v)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
