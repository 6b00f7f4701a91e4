package daemon

// Shipping a job's outputs with its image: the output layer (built once
// from the kept files, the same bytes whenever it is built), the image that
// carries it, and the files as layers of an OCI artifact.

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/layers"
)

// shipsLayer reports whether job j's pushed image carries its outputs as a
// layer: it ships them so, and training left at least one file.
func shipsLayer(j *gantry.Job) bool {
	return j.Spec.Outputs.Ship == gantry.ShipLayer && j.Outputs != nil && len(j.Outputs.Files) > 0
}

// shipsArtifact reports whether job j's outputs go beside its pushed image
// as an OCI artifact.
func shipsArtifact(j *gantry.Job) bool {
	return j.Spec.Outputs.Ship == gantry.ShipArtifact && j.Outputs != nil && len(j.Outputs.Files) > 0
}

// ensureLayer returns job j's record with its output layer built, kept and
// recorded (j.Outputs.Layer), when it ships one; the layer is built once and
// kept under the data dir. It returns ErrNotFound when a kept output file
// is gone.
func (d *Daemon) ensureLayer(ctx context.Context, j *gantry.Job) (*gantry.Job, error) {
	defer d.holdOutputs()() // no prune until the record lists it (retention_files.go)
	l, err := d.newLayer(ctx, j)
	if err != nil || l == nil {
		return j, err
	}
	nj, err := d.store.Update(context.WithoutCancel(ctx), j.ID, func(j *gantry.Job) error {
		recordLayer(j, l)
		return nil
	})
	if err != nil {
		return j, fmt.Errorf("job %s: record its output layer: %w", j.ID, err)
	}
	return nj, nil
}

// newLayer builds job j's output layer when it ships one that is not kept
// yet, and returns it; nil when there is nothing to build.
func (d *Daemon) newLayer(ctx context.Context, j *gantry.Job) (*gantry.OutputLayer, error) {
	if !shipsLayer(j) {
		return nil, nil
	}
	if l := j.Outputs.Layer; l != nil {
		if _, err := os.Stat(d.outputLayer(l.Digest)); err == nil {
			return nil, nil
		}
	}
	start := time.Now()
	l, err := d.buildLayer(ctx, j.Outputs)
	if err != nil {
		return nil, fmt.Errorf("job %s: build the layer of its outputs: %w", j.ID, err)
	}
	d.log.Info("output layer built", "job", j.ID, "digest", l.Digest, "bytes", l.Size, "took", time.Since(start).Round(time.Millisecond))
	return &l, nil
}

// recordLayer records l as the layer of j's outputs (when l is not nil).
func recordLayer(j *gantry.Job, l *gantry.OutputLayer) {
	if l != nil && j.Outputs != nil {
		j.Outputs.Layer = l
	}
}

// buildLayer writes the layer holding outs' files at outs.Dir, compressed,
// under the data dir by its digest, and describes it. It returns
// ErrInvalid for a file recorded outside the directory, ErrNotFound for one
// no longer kept.
func (d *Daemon) buildLayer(ctx context.Context, outs *gantry.Outputs) (gantry.OutputLayer, error) {
	for _, f := range outs.Files {
		if !filepath.IsLocal(f.Path) || path.Clean(f.Path) != f.Path {
			return gantry.OutputLayer{}, gantry.Errorf(gantry.ErrInvalid, "output file %q: not a clean path inside the output directory", f.Path)
		}
		if _, err := os.Stat(d.outputBlob(f.Digest)); errors.Is(err, fs.ErrNotExist) {
			return gantry.OutputLayer{}, gantry.Errorf(gantry.ErrNotFound, "output file %s (%s) is no longer kept in the data dir", f.Path, f.Digest)
		}
	}
	dir := filepath.Join(d.OutputsDir(), "layers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return gantry.OutputLayer{}, err
	}
	tmp, err := os.CreateTemp(dir, "building-*")
	if err != nil {
		return gantry.OutputLayer{}, err
	}
	defer os.Remove(tmp.Name()) // once renamed, a no-op
	l, err := d.writeLayer(ctx, tmp, outs)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return gantry.OutputLayer{}, err
	}
	dst := d.outputLayer(l.Digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return gantry.OutputLayer{}, err
	}
	return l, os.Rename(tmp.Name(), dst)
}

// writeLayer writes the gzipped tar of outs, at outs.Dir, to w and returns
// its digests and size. The bytes depend on the files alone: the tar is
// gantry outputs' (entries in path order, owned by root, dated the epoch),
// and the gzip header has no name or time.
func (d *Daemon) writeLayer(ctx context.Context, w io.Writer, outs *gantry.Outputs) (gantry.OutputLayer, error) {
	root := strings.TrimPrefix(path.Clean(outs.Dir), "/")
	if root == "" || root == "." {
		return gantry.OutputLayer{}, gantry.Errorf(gantry.ErrInvalid, "output directory %q: want an absolute path other than /", outs.Dir)
	}
	compressed := sha256.New()
	n := &countWriter{w: io.MultiWriter(w, compressed)}
	zw, err := gzip.NewWriterLevel(n, gzip.BestSpeed) // weights compress little: speed matters more
	if err != nil {
		return gantry.OutputLayer{}, err
	}
	uncompressed := sha256.New()
	if err := d.writeOutputsTar(ctx, outs, root+"/", io.MultiWriter(zw, uncompressed)); err != nil {
		return gantry.OutputLayer{}, err
	}
	if err := zw.Close(); err != nil {
		return gantry.OutputLayer{}, err
	}
	return gantry.OutputLayer{
		Digest: "sha256:" + hex.EncodeToString(compressed.Sum(nil)),
		DiffID: "sha256:" + hex.EncodeToString(uncompressed.Sum(nil)),
		Size:   n.n,
	}, nil
}

// shipImage returns the image to push for job j, built from its image
// img: for a job that ships its outputs as a layer, img plus that layer
// (kept by ensureLayer) with GANTRY_OUTPUT_DIR in its environment; img
// itself otherwise. img's layers are its own still, read as it reads them.
func (d *Daemon) shipImage(j *gantry.Job, img v1.Image) (v1.Image, error) {
	if !shipsLayer(j) || j.Outputs.Layer == nil {
		return img, nil
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	lt := types.DockerLayer
	if mt == types.OCIManifestSchema1 {
		lt = types.OCILayer
	}
	l := j.Outputs.Layer
	layer, err := keptLayer(d.outputLayer(l.Digest), l.Digest, l.DiffID, l.Size, lt)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config.Env = slices.DeleteFunc(cf.Config.Env, func(kv string) bool {
		return strings.HasPrefix(kv, gantry.OutputDirEnv+"=")
	})
	cf.Config.Env = append(cf.Config.Env, gantry.OutputDirEnv+"="+j.Outputs.Dir)
	withEnv, err := mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	created := j.Times.Created
	if t := j.Times.Run.Finished; t != nil {
		created = *t
	}
	return mutate.Append(withEnv, mutate.Addendum{Layer: layer, History: v1.History{
		CreatedBy: "gantry: outputs of job " + j.ID,
		Created:   v1.Time{Time: created.UTC()},
		Comment:   "the files training left in " + j.Outputs.Dir,
	}})
}

// outputFiles returns job j's output files as blobs, by path, for an
// artifact.
func (d *Daemon) outputFiles(j *gantry.Job) (map[string]v1.Layer, error) {
	files := map[string]v1.Layer{}
	for _, f := range j.Outputs.Files {
		l, err := keptLayer(d.outputBlob(f.Digest), f.Digest, f.Digest, f.Size, "application/octet-stream")
		if err != nil {
			return nil, err
		}
		files[f.Path] = l
	}
	return files, nil
}

// keptFile is a blob kept in a file, whose digests and size are known: it
// is read only when it is sent.
type keptFile struct {
	path           string
	digest, diffID v1.Hash
	size           int64
	mediaType      types.MediaType
}

func keptLayer(file, digest, diffID string, size int64, mt types.MediaType) (v1.Layer, error) {
	dg, err := v1.NewHash(digest)
	if err != nil {
		return nil, fmt.Errorf("kept blob %s: %w", digest, err)
	}
	di, err := v1.NewHash(diffID)
	if err != nil {
		return nil, fmt.Errorf("kept blob %s: %w", diffID, err)
	}
	return &keptFile{path: file, digest: dg, diffID: di, size: size, mediaType: mt}, nil
}

func (k *keptFile) Digest() (v1.Hash, error)            { return k.digest, nil }
func (k *keptFile) DiffID() (v1.Hash, error)            { return k.diffID, nil }
func (k *keptFile) Size() (int64, error)                { return k.size, nil }
func (k *keptFile) MediaType() (types.MediaType, error) { return k.mediaType, nil }

func (k *keptFile) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, gantry.Errorf(gantry.ErrNotFound, "blob %s is no longer kept", k.digest)
	}
	return f, err
}

func (k *keptFile) Uncompressed() (io.ReadCloser, error) {
	rc, err := k.Compressed()
	if err != nil || k.digest == k.diffID {
		return rc, err
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, rc}, nil
}

// uploadShipped starts sending the blobs job j's pushed image has beyond
// its built image (the output layer, the new config) to the repositories
// it pushes to, once after (the upload of the built image's blobs) is done.
// It publishes nothing; what it could not send, the push sends.
func (d *Daemon) uploadShipped(ctx context.Context, j *gantry.Job, after *earlyUpload) *earlyUpload {
	return d.startUpload(ctx, j, "output layer uploaded while the gate was decided", func(ctx context.Context) error {
		after.wait(ctx)
		img, err := d.image(ctx, j)
		if err != nil {
			return err
		}
		defer layers.Release(img)
		ship, err := d.shipImage(j, img)
		if err != nil {
			return err
		}
		return d.pusher.Upload(ctx, ship, j.Spec.Push)
	})
}
