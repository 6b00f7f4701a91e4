package registry

// Files as an OCI artifact: one layer per file, titled by its path, and the
// empty config, as ORAS and the OCI image spec (1.1) lay artifacts out.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The empty config of an artifact ("{}"), as the OCI image spec names it.
const (
	emptyConfigType = types.MediaType("application/vnd.oci.empty.v1+json")
	emptyConfig     = "{}"
	// TitleAnnotation names a layer's file.
	TitleAnnotation = "org.opencontainers.image.title"
)

// AttachFiles pushes files as one OCI artifact of artifactType whose
// subject is the manifest subject (a digest) in the repository of ref: one
// layer per file, in path order, annotated with its path
// (org.opencontainers.image.title), and the empty config. It returns the
// artifact's digest. Like Attach, it leaves the subject unchanged and keeps
// the referrers tag scheme up to date for registries without the referrers
// API. Blobs the registry has are not sent again.
func (p *Pusher) AttachFiles(ctx context.Context, ref, subject, artifactType string, files map[string]v1.Layer) (string, error) {
	return p.attach(ctx, ref, subject, func(sub v1.Descriptor) (v1.Image, error) {
		return filesArtifact(artifactType, files, sub)
	})
}

func filesArtifact(artifactType string, files map[string]v1.Layer, sub v1.Descriptor) (v1.Image, error) {
	cfg, _, err := v1.SHA256(bytes.NewReader([]byte(emptyConfig)))
	if err != nil {
		return nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Config:        v1.Descriptor{MediaType: emptyConfigType, Digest: cfg, Size: int64(len(emptyConfig))},
		Subject:       &sub,
	}
	a := &artifact{layers: map[v1.Hash]v1.Layer{}}
	paths := make([]string, 0, len(files))
	for path := range files {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	for _, path := range paths {
		l := files[path]
		desc, err := partial.Descriptor(l)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", path, err)
		}
		desc.Annotations = map[string]string{TitleAnnotation: path}
		m.Layers = append(m.Layers, *desc)
		a.layers[desc.Digest] = l
	}
	if a.manifest, err = json.Marshal(m); err != nil {
		return nil, err
	}
	return partial.CompressedToImage(a)
}

// artifact is an image made of a manifest written here, the empty config
// and the layers given.
type artifact struct {
	manifest []byte
	layers   map[v1.Hash]v1.Layer
}

func (a *artifact) RawConfigFile() ([]byte, error)      { return []byte(emptyConfig), nil }
func (a *artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("artifact: no layer %s", h)
}
