package runner

import (
	"context"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// CopyFrom returns a tar stream of path in container id (running or not),
// as docker cp reads it: the first entry is path's own base name, and what
// lies under a directory follows under that name. The caller closes it. The
// stream is not bounded in time (it may be large): ctx ends it. It returns
// ErrNotFound when path does not exist in the container; a container that
// is gone is another error, which says so.
func (e *Engine) CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error) {
	if rc, ok, err := e.copyFromVolume(ctx, id, path); ok { // outputs.go
		return rc, err
	}
	res, err := e.c.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: path})
	if err == nil {
		return res.Content, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("copy %s from container %.12s: %w", path, id, err)
	}
	// The engine answers 404 for both: tell a missing container from a
	// missing path.
	if _, ierr := e.inspect(ctx, id); ierr != nil {
		return nil, fmt.Errorf("copy %s from container %.12s: the container is gone: %v", path, id, ierr)
	}
	return nil, gantry.Errorf(gantry.ErrNotFound, "%s: not in container %.12s", path, id)
}
