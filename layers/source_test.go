package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/blobs"
)

// lostEngine is an engine that has no image at all, as after docker rmi.
type lostEngine struct{ daemon.Client }

func (lostEngine) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	return client.ImageInspectResult{}, cerrdefs.ErrNotFound
}

func hashOf(data []byte) v1.Hash {
	s := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// keepImage keeps, in cache, an image of one layer, and returns its ID.
func keepImage(t *testing.T, cache *blobs.Cache) v1.Hash {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "model.bin", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("iris"))
	tw.Close()
	diffID := hashOf(buf.Bytes())
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil }
	if _, err := cache.PutLayer(context.Background(), diffID, open); err != nil {
		t.Fatal(err)
	}
	cf := v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}}}
	raw, err := json.Marshal(cf)
	if err != nil {
		t.Fatal(err)
	}
	id := hashOf(raw)
	if err := cache.PutConfig(id, raw); err != nil {
		t.Fatal(err)
	}
	return id
}

// An image the engine no longer has is still served by its ID when its
// config and layers are kept; a name the engine does not know is not found.
func TestImageServedFromTheCacheWhenTheEngineLostIt(t *testing.T) {
	cache, err := blobs.Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	id := keepImage(t, cache)
	s := &Source{Cache: cache, Engine: lostEngine{}, TmpDir: t.TempDir()}
	img, err := s.Image(context.Background(), id.String())
	if err != nil {
		t.Fatalf("Image(%s): %v", id, err)
	}
	defer Release(img)
	if got, err := img.ConfigName(); err != nil || got != id {
		t.Errorf("config %s, %v; want the image ID %s", got, err, id)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		t.Fatalf("layers %v, %v; want one", ls, err)
	}
	if _, err := img.Digest(); err != nil {
		t.Errorf("Digest: %v", err)
	}

	for _, ref := range []string{"iris:gone", "sha256:" + hex.EncodeToString(make([]byte, 32))} {
		if _, err := s.Image(context.Background(), ref); !errors.Is(err, gantry.ErrNotFound) {
			t.Errorf("Image(%s) = %v, want ErrNotFound", ref, err)
		}
	}
}

func TestReadable(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "image", "overlay2", "layerdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		root, driver string
		ok           bool
	}{
		{root, "overlay2", true},
		{root, "vfs", false},             // no layer store for it there
		{root, "btrfs", false},           // a layout Source does not know
		{t.TempDir(), "overlay2", false}, // not the engine's data root
	}
	for _, tc := range tests {
		if err := Readable(tc.root, tc.driver); (err == nil) != tc.ok {
			t.Errorf("Readable(%s, %s) = %v, want ok %v", tc.root, tc.driver, err, tc.ok)
		}
	}
}

// A layer store entry whose cache-id could lead out of the driver's
// directory is refused before anything is opened.
func TestLayerTarRefusesAnEscapingCacheID(t *testing.T) {
	root := t.TempDir()
	layerdb := filepath.Join(root, "image", "overlay2", "layerdb", "sha256", "x")
	if err := os.MkdirAll(layerdb, 0o700); err != nil {
		t.Fatal(err)
	}
	diffID := hashOf([]byte("layer"))
	os.WriteFile(filepath.Join(layerdb, "diff"), []byte(diffID.String()), 0o600)
	for _, cid := range []string{"../../../etc", "a/b", ".", ""} {
		os.WriteFile(filepath.Join(layerdb, "cache-id"), []byte(cid), 0o600)
		s := &Source{Root: root, Driver: "overlay2"}
		rc, err := s.layerTar(layerdb, diffID)
		if err == nil {
			rc.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "unexpected cache-id") {
			t.Errorf("layerTar with cache-id %q: %v, want the cache-id refused", cid, err)
		}
	}
}
