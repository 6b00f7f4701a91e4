// Package layers reads an image's layers from the Docker Engine for a push:
// from the engine's own layer store where gantryd may read it, with docker
// save otherwise, keeping each layer compressed once in a blobs.Cache. The
// images it returns hold what they read from (pins on kept blobs, a docker
// save file) until Release.
package layers

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/blobs"
)

// Source reads local images for pushing, layer by layer, through Cache: a
// layer already kept is not read from the engine nor compressed again, so
// pushing an unchanged image reads no layer at all, and pushing an image
// after a change reads and compresses the changed layers only.
//
// A layer not kept yet is read from the engine's own layer store when
// gantryd may read it (it runs beside a local engine whose storage driver
// is overlay2 or vfs, with access to its data root): the engine's tar-split
// record and the layer's files give back the layer tar byte for byte, which
// is what the engine itself sends on docker push. Each layer read this way
// must hash to the diffID the image's config lists, or it is not used.
// Otherwise (a remote engine, another driver, no access) the whole image is
// read once with docker save, and its layers are kept from there.
type Source struct {
	Cache *blobs.Cache
	// Engine answers image inspects and docker save.
	Engine daemon.Client
	// Root and Driver are the engine's data root and storage driver
	// (docker info); Root "" reads through docker save only.
	Root, Driver string
	// TmpDir holds docker save files while they are read.
	TmpDir string
	// Reads, when set, is told how each layer not kept yet was read:
	// "store" or "save". Tests and benchmarks count them.
	Reads func(how string, diffID v1.Hash)
	// Fallback, when set, is told why an image could not be read from the
	// layer store (and is read with docker save instead).
	Fallback func(ref string, err error)
}

// Readable reports whether the layers of an engine with data root root and
// storage driver driver can be read here: the driver is one whose layout
// Source knows, and its layer store is there to read.
func Readable(root, driver string) error {
	if layerDirs[driver] == nil {
		return fmt.Errorf("storage driver %s: its layers are not read directly", driver)
	}
	_, err := os.Stat(filepath.Join(root, "image", driver, "layerdb"))
	return err
}

// layerDirs gives, for each storage driver whose layout Source knows, the
// directory holding a layer's files from the engine's data root and the
// layer's cache-id.
var layerDirs = map[string]func(root, cid string) string{
	"overlay2": func(root, cid string) string { return filepath.Join(root, "overlay2", cid, "diff") },
	"vfs":      func(root, cid string) string { return filepath.Join(root, "vfs", "dir", cid) },
}

// Image returns the local image ref (a name or ID) as a v1.Image whose layers
// are kept blobs. An image ID the engine no longer has is still served when
// its config and every layer are kept.
func (s *Source) Image(ctx context.Context, ref string) (v1.Image, error) {
	res, err := s.Engine.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		// An image ID whose config and layers are all kept can be pushed
		// without the engine.
		if id, herr := v1.NewHash(ref); herr == nil {
			if img, kerr := s.kept(id); kerr == nil {
				return img, nil
			}
		}
		return nil, gantry.Errorf(gantry.ErrNotFound, "image %s: not in the engine", ref)
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	id, err := v1.NewHash(res.ID)
	if err != nil {
		return nil, fmt.Errorf("image %s: the engine gave the ID %q: %w", ref, res.ID, err)
	}
	img, err := s.kept(id)
	if err == nil {
		return img, nil
	}
	if s.Root != "" {
		if err = s.fromStore(ctx, id); err == nil {
			return s.kept(id)
		}
		if s.Fallback != nil {
			s.Fallback(ref, err)
		}
	}
	if err := s.fromSave(ctx, ref, id); err != nil {
		return nil, err
	}
	return s.kept(id)
}

// kept returns image id if its config and every layer are kept.
func (s *Source) kept(id v1.Hash) (v1.Image, error) {
	raw, ok := s.Cache.Config(id)
	if !ok {
		return nil, fmt.Errorf("config %s is not kept", id)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", id, err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(raw)), Digest: id},
	}
	descs, unpin, ok := s.Cache.Layers(cf.RootFS.DiffIDs)
	if !ok {
		return nil, fmt.Errorf("a layer of %s is not kept", id)
	}
	img := &keptImage{id: id, config: raw, layers: map[v1.Hash]*keptLayer{}}
	for i, d := range descs {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.DockerLayer, Size: d.Size, Digest: d.Digest})
		img.layers[d.Digest] = &keptLayer{cache: s.Cache, desc: d, diffID: cf.RootFS.DiffIDs[i]}
	}
	if img.manifest, err = json.Marshal(m); err != nil {
		unpin()
		return nil, err
	}
	full, err := partial.CompressedToImage(img)
	if err != nil {
		unpin()
		return nil, err
	}
	return &pinnedImage{Image: full, unpin: unpin}, nil
}

// pinnedImage is an image whose blobs Prune leaves until it is closed.
type pinnedImage struct {
	v1.Image
	unpin func()
}

func (p *pinnedImage) Close() error { p.unpin(); return nil }

// cacheID is what a layer's cache-id file must hold: the driver's name for
// the layer's directory, 64 hex digits for the engine's own layers, a
// shorter base-32 ID for layers BuildKit made. Nothing that could leave the
// driver's directory.
var cacheID = regexp.MustCompile(`^[0-9a-z]{1,128}$`)

// fromStore keeps image id's config and layers, read from the engine's data
// root.
func (s *Source) fromStore(ctx context.Context, id v1.Hash) error {
	imagedb := filepath.Join(s.Root, "image", s.Driver)
	raw, err := os.ReadFile(filepath.Join(imagedb, "imagedb", "content", "sha256", id.Hex))
	if err != nil {
		return err
	}
	if err := s.Cache.PutConfig(id, raw); err != nil {
		return err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	var chain string
	for _, diffID := range cf.RootFS.DiffIDs {
		if chain == "" {
			chain = diffID.String()
		} else {
			chain = chainID(chain, diffID)
		}
		layerdb := filepath.Join(imagedb, "layerdb", "sha256", strings.TrimPrefix(chain, "sha256:"))
		open := func() (io.ReadCloser, error) { return s.layerTar(layerdb, diffID) }
		if err := s.keepLayer(ctx, "store", diffID, open); err != nil {
			return err
		}
	}
	return nil
}

// chainID is the layer store's name for the layer diffID on top of the
// layers whose chain ID is parent: sha256 of "parent diffID".
func chainID(parent string, diffID v1.Hash) string {
	s := sha256.Sum256([]byte(parent + " " + diffID.String()))
	return "sha256:" + hex.EncodeToString(s[:])
}

// keepLayer compresses and keeps layer diffID, read with open, unless it is
// kept already, and tells Reads how it was read.
func (s *Source) keepLayer(ctx context.Context, how string, diffID v1.Hash, open func() (io.ReadCloser, error)) error {
	if _, ok := s.Cache.Layer(diffID); ok {
		return nil
	}
	if _, err := s.Cache.PutLayer(ctx, diffID, open); err != nil {
		return err
	}
	if s.Reads != nil {
		s.Reads(how, diffID)
	}
	return nil
}

// layerTar rebuilds a layer's tar from its layerdb entry: the tar-split
// record of the tar's headers, and the files the driver unpacked it to.
func (s *Source) layerTar(layerdb string, diffID v1.Hash) (io.ReadCloser, error) {
	got, err := os.ReadFile(filepath.Join(layerdb, "diff"))
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(got)) != diffID.String() {
		return nil, fmt.Errorf("layer store entry %s is for %s, not %s", layerdb, got, diffID)
	}
	c, err := os.ReadFile(filepath.Join(layerdb, "cache-id"))
	if err != nil {
		return nil, err
	}
	cid := strings.TrimSpace(string(c))
	if !cacheID.MatchString(cid) {
		return nil, fmt.Errorf("layer store entry %s: unexpected cache-id %q", layerdb, cid)
	}
	dir := layerDirs[s.Driver]
	if dir == nil {
		return nil, fmt.Errorf("storage driver %s: its layers are not read directly", s.Driver)
	}
	root, err := os.OpenRoot(dir(s.Root, cid))
	if err != nil {
		return nil, err
	}
	ts, err := os.Open(filepath.Join(layerdb, "tar-split.json.gz"))
	if err != nil {
		root.Close()
		return nil, err
	}
	zr, err := gzip.NewReader(ts)
	if err != nil {
		root.Close()
		ts.Close()
		return nil, err
	}
	out := asm.NewOutputTarStream(rootGetter{root}, storage.NewJSONUnpacker(zr))
	return &closeAll{ReadCloser: out, also: []io.Closer{zr, ts, root}}, nil
}

// rootGetter serves a layer's files from inside its directory only.
type rootGetter struct{ r *os.Root }

func (g rootGetter) Get(name string) (io.ReadCloser, error) {
	name = path.Clean("/" + filepath.ToSlash(name))[1:]
	if name == "" {
		name = "."
	}
	return g.r.Open(name)
}

type closeAll struct {
	io.ReadCloser
	also []io.Closer
}

func (c *closeAll) Close() error {
	err := c.ReadCloser.Close()
	for _, a := range c.also {
		a.Close()
	}
	return err
}

// FromEngine returns the local image ref (a name) as the engine holds it,
// read once through docker save into a file in tmpDir. The image is an
// io.Closer: Close removes that file, which the caller must do when the push
// is over (go-containerregistry's own file buffer waits for the garbage
// collector, and a busy gantryd would fill the disk first).
func FromEngine(ctx context.Context, c daemon.Client, ref, tmpDir string) (v1.Image, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "local image %q: %v", ref, err)
	}
	rc, err := c.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(tmpDir, "save-*.tar")
	if err != nil {
		return nil, fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	path := f.Name()
	img, err := tarball.Image(func() (io.ReadCloser, error) { return os.Open(path) }, &tag)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	return &savedImage{Image: img, path: path}, nil
}

// savedImage is an image read from a docker save file, which Close removes.
type savedImage struct {
	v1.Image
	path string
}

func (s *savedImage) Close() error { return os.Remove(s.path) }

// fromSave keeps image id's config and layers, read with docker save.
func (s *Source) fromSave(ctx context.Context, ref string, id v1.Hash) error {
	img, err := FromEngine(ctx, s.Engine, ref, s.TmpDir)
	if err != nil {
		return err
	}
	defer Release(img)
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	if err := s.Cache.PutConfig(id, raw); err != nil {
		return fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	for _, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return fmt.Errorf("read image %s from the engine: %w", ref, err)
		}
		if err := s.keepLayer(ctx, "save", diffID, l.Uncompressed); err != nil {
			return fmt.Errorf("read image %s from the engine: %w", ref, err)
		}
	}
	return nil
}

// Release lets go of what an image from FromEngine or Source holds: a
// docker save file, or the pins on its kept blobs.
func Release(img v1.Image) {
	if c, ok := img.(io.Closer); ok {
		c.Close()
	}
}

// keptImage is an image whose config and layers are kept blobs.
type keptImage struct {
	id       v1.Hash // the config's digest
	config   []byte
	manifest []byte
	layers   map[v1.Hash]*keptLayer
}

func (i *keptImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *keptImage) MediaType() (types.MediaType, error) { return types.DockerManifestSchema2, nil }
func (i *keptImage) RawManifest() ([]byte, error)        { return i.manifest, nil }

func (i *keptImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	if h == i.id {
		return partial.ConfigLayer(i)
	}
	return nil, gantry.Errorf(gantry.ErrNotFound, "image has no blob %s", h)
}

// keptLayer is a kept compressed layer.
type keptLayer struct {
	cache  *blobs.Cache
	desc   blobs.Desc
	diffID v1.Hash
}

func (l *keptLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *keptLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *keptLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *keptLayer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }
func (l *keptLayer) Compressed() (io.ReadCloser, error)  { return l.cache.Open(l.desc.Digest) }
