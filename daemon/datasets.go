package daemon

// Datasets: which a job may mount (checked at submit, before anything is
// written), and what each held when the job ran (pinned before its
// container is created, by the digest of its tree).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/treesum"
)

// resolveDatasetRoots resolves the --dataset-root directories to their real
// paths, as gantryd starts: each must exist and be a directory other than
// /. It returns ErrInvalid naming the flag.
func resolveDatasetRoots(roots []string) ([]string, error) {
	var out []string
	for _, r := range roots {
		real, err := filepath.EvalSymlinks(r)
		if err != nil {
			return nil, gantry.Errorf(gantry.ErrInvalid, "%s %s: %v: create the directory, or leave the flag out", gantry.FlagDatasetRoot, r, unwrapPath(err))
		}
		if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
			return nil, gantry.Errorf(gantry.ErrInvalid, "%s %s: not a directory; name the directory datasets are under", gantry.FlagDatasetRoot, r)
		}
		if real == "/" {
			return nil, gantry.Errorf(gantry.ErrInvalid, "%s %s: it leads to /, which would let jobs mount the whole host; name a directory below it", gantry.FlagDatasetRoot, r)
		}
		if !slices.Contains(out, real) {
			out = append(out, real)
		}
	}
	return out, nil
}

// unwrapPath is a path error's cause, without the path (said already).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// under reports whether path p is dir or lies inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// checkDatasets checks that each of spec's datasets may be mounted and
// exists: a named volume the engine has, or a host path whose real path
// lies under a --dataset-root. A host path's source becomes its real path,
// the one mounted. It returns ErrForbidden for a path outside every root
// (through a symlink too), ErrInvalid for a source that does not exist.
func (d *Daemon) checkDatasets(ctx context.Context, spec *gantry.Spec) error {
	for i := range spec.Run.Datasets {
		ds := &spec.Run.Datasets[i]
		if ds.Volume() {
			if _, err := d.engine.Volume(ctx, ds.Source); err != nil {
				if errors.Is(err, gantry.ErrNotFound) {
					return gantry.Errorf(gantry.ErrInvalid, "dataset %s:%s: no such volume %s: create it with docker volume create", ds.Source, ds.Target, ds.Source)
				}
				return fmt.Errorf("dataset %s: %w", ds.Source, err)
			}
			continue
		}
		real, err := d.realDatasetPath(ds.Source)
		if err != nil {
			return err
		}
		ds.Source = real
	}
	return nil
}

// realDatasetPath is the real path of host path src, which must lie under
// one of the policy's dataset roots as written and once its symlinks are
// resolved. A path outside every root is refused without being looked at.
func (d *Daemon) realDatasetPath(src string) (string, error) {
	roots := d.cfg.Policy.DatasetRoots
	within := func(p string) func(string) bool { return func(root string) bool { return under(p, root) } }
	if !slices.ContainsFunc(roots, within(src)) && !slices.ContainsFunc(d.givenRoots, within(src)) {
		return "", gantry.Errorf(gantry.ErrForbidden, "dataset %s: outside every directory gantryd lets jobs mount (%s: %s); move the data under one, or ask the operator to add a %s",
			src, gantry.FlagDatasetRoot, strings.Join(roots, ", "), gantry.FlagDatasetRoot)
	}
	real, err := filepath.EvalSymlinks(src)
	if errors.Is(err, fs.ErrNotExist) {
		return "", gantry.Errorf(gantry.ErrInvalid, "dataset %s: no such file or directory on gantryd's host", src)
	}
	if err != nil {
		return "", gantry.Errorf(gantry.ErrInvalid, "dataset %s: %v", src, unwrapPath(err))
	}
	if !slices.ContainsFunc(roots, within(real)) {
		return "", gantry.Errorf(gantry.ErrForbidden, "dataset %s: it leads through a symlink to %s, outside every directory gantryd lets jobs mount (%s: %s)",
			src, real, gantry.FlagDatasetRoot, strings.Join(roots, ", "))
	}
	return real, nil
}

// pinDatasets pins each of the job's datasets by the digest of its tree and
// records them, before its container is created: the record says what the
// training read. Files unchanged since an earlier job are not read again.
// A host path is checked again: what it leads to must not have changed.
func (r *jobRun) pinDatasets(ctx context.Context) error {
	d, j := r.d, r.j
	if len(j.Spec.Run.Datasets) == 0 {
		return nil
	}
	pins := make([]gantry.DatasetPin, 0, len(j.Spec.Run.Datasets))
	for _, ds := range j.Spec.Run.Datasets {
		pin, sum, err := d.pinDataset(ctx, ds)
		if err != nil {
			return err
		}
		if pin.Digest == "" {
			r.say("dataset %s:%s not pinned: %s", ds.Source, ds.Target, pin.Note)
		} else {
			r.say("dataset %s:%s pinned: %s (%d files, %s; %d files read, the rest known unchanged)",
				ds.Source, ds.Target, pin.Digest, pin.Files, gantry.FormatBytes(pin.Bytes), sum.Read)
		}
		pins = append(pins, pin)
	}
	var err error
	r.j, err = d.store.Update(ctx, j.ID, func(j *gantry.Job) error {
		j.Inputs.Datasets = pins
		return nil
	})
	return err
}

// pinDataset sums the tree of one dataset: a host path's, or a named
// volume's data directory when gantryd can read it (else the pin says why
// it has no digest).
func (d *Daemon) pinDataset(ctx context.Context, ds gantry.Dataset) (gantry.DatasetPin, treesum.Sum, error) {
	pin := gantry.DatasetPin{Dataset: ds}
	dir := ds.Source
	if ds.Volume() {
		v, err := d.engine.Volume(ctx, ds.Source)
		if errors.Is(err, gantry.ErrNotFound) {
			return pin, treesum.Sum{}, fmt.Errorf("dataset %s: the volume is gone (%v)", ds.Source, err)
		}
		if err != nil {
			return pin, treesum.Sum{}, fmt.Errorf("dataset %s: %w", ds.Source, err)
		}
		if v.Mountpoint == "" {
			pin.Note = "the engine is not on gantryd's host, which cannot read the volume's files"
			return pin, treesum.Sum{}, nil
		}
		if _, err := os.Stat(v.Mountpoint); err != nil {
			pin.Note = fmt.Sprintf("gantryd cannot read the volume's data directory %s: %v", v.Mountpoint, unwrapPath(err))
			return pin, treesum.Sum{}, nil
		}
		dir = v.Mountpoint
	} else if real, err := d.realDatasetPath(ds.Source); err != nil {
		return pin, treesum.Sum{}, err
	} else if real != ds.Source {
		return pin, treesum.Sum{}, gantry.Errorf(gantry.ErrForbidden, "dataset %s changed since the job was submitted: it now leads to %s; submit the job again", ds.Source, real)
	}
	sum, err := treesum.Tree(ctx, dir, d.digests)
	if err != nil {
		if ds.Volume() && ctx.Err() == nil {
			pin.Note = fmt.Sprintf("gantryd could not read the volume's data directory %s: %v", dir, err)
			return pin, treesum.Sum{}, nil
		}
		return pin, treesum.Sum{}, fmt.Errorf("dataset %s: sum its files: %w", ds.Source, err)
	}
	pin.Digest, pin.Files, pin.Bytes = sum.Digest, sum.Files, sum.Bytes
	d.log.Info("dataset pinned", "dataset", ds.Source, "digest", sum.Digest, "files", sum.Files, "bytes", sum.Bytes, "read", sum.Read, "read_bytes", sum.ReadBytes)
	return pin, sum, nil
}
