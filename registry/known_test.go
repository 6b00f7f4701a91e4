package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gantry-ml/gantry"
)

// countRequests counts the registry requests by method and kind (blobs or
// manifests).
type countRequests struct {
	mu sync.Mutex
	n  map[string]int
	h  atomic.Pointer[http.Handler]
}

func (c *countRequests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blob"
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifest"
	}
	c.mu.Lock()
	c.n[r.Method+" "+kind]++
	c.mu.Unlock()
	(*c.h.Load()).ServeHTTP(w, r)
}

func (c *countRequests) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func newCountingRegistry(t *testing.T) (string, *countRequests) {
	c := &countRequests{n: map[string]int{}}
	h := strictRegistry()
	c.h.Store(&h)
	return newRegistry(t, c), c
}

// strictRegistry is the in-process registry, refusing a manifest whose
// blobs it does not hold as the distribution registry does
// (MANIFEST_BLOB_UNKNOWN); the in-process one takes any manifest.
func strictRegistry() http.Handler {
	inner := innerRegistry()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
		if r.Method != http.MethodPut || !ok {
			inner.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		m, err := v1.ParseManifest(bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/v2/"+repo+"/blobs/"+d.Digest.String(), nil))
			if rec.Code != http.StatusOK {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":%q}]}`, d.Digest)
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		inner.ServeHTTP(w, r)
	})
}

func TestPushSendsOnlyTheManifestOfAnImageWhoseBlobsAreThere(t *testing.T) {
	host, reqs := newCountingRegistry(t)
	img, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := New(WithKeychain(authn.NewMultiKeychain()))
	ref := host + "/iris:1"
	if _, err := p.Push(ctx, img, []string{ref}, gantry.Discard); err != nil {
		t.Fatalf("first push: %v", err)
	}
	if n := reqs.take(); n["HEAD blob"] == 0 && n["PUT blob"]+n["POST blob"] == 0 {
		t.Fatalf("the first push sent no blob: %v", n)
	}
	// Again, to two tags: the manifest alone, and the digest check.
	var progress bytes.Buffer
	got, err := p.Push(ctx, img, []string{ref, host + "/iris:job-1"}, lines{&progress})
	if err != nil {
		t.Fatalf("second push: %v", err)
	}
	n := reqs.take()
	if blobs := n["HEAD blob"] + n["GET blob"] + n["POST blob"] + n["PUT blob"] + n["PATCH blob"]; blobs != 0 {
		t.Errorf("the push of an image whose blobs the registry has made %d blob requests: %v", blobs, n)
	}
	if n["PUT manifest"] != 2 {
		t.Errorf("%d manifest PUTs, want 2 (one per tag): %v", n["PUT manifest"], n)
	}
	if !strings.Contains(progress.String(), "manifest only") {
		t.Errorf("progress does not say the push sent the manifest only:\n%s", progress.String())
	}
	want, _ := img.Digest()
	for _, g := range got {
		if g.Digest != want.String() || head(t, g.Ref) != want.String() {
			t.Errorf("%s: recorded %s, registry serves %s, image is %s", g.Ref, g.Digest, head(t, g.Ref), want)
		}
	}

	// The registry loses its blobs (a garbage collection, a new volume):
	// the manifest alone is refused, and the full push sends them again.
	h := strictRegistry()
	reqs.h.Store(&h)
	if _, err := p.Push(ctx, img, []string{ref}, gantry.Discard); err != nil {
		t.Fatalf("push after the registry lost its blobs: %v", err)
	}
	if n := reqs.take(); n["PUT blob"]+n["POST blob"]+n["PATCH blob"] == 0 {
		t.Errorf("the push after the registry lost its blobs sent none: %v", n)
	}
	if d := head(t, ref); d != want.String() {
		t.Errorf("registry serves %s for %s, want %s", d, ref, want)
	}
}

func TestUploadSendsBlobsAndPublishesNothing(t *testing.T) {
	host, reqs := newCountingRegistry(t)
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := New(WithKeychain(authn.NewMultiKeychain()))
	ref := host + "/iris:1"
	if err := p.Upload(ctx, img, []string{ref, host + "/iris:job-1"}); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	n := reqs.take()
	if n["PUT manifest"] != 0 {
		t.Errorf("Upload put %d manifests, want none", n["PUT manifest"])
	}
	// Every blob is there, and no tag.
	m, _ := img.Manifest()
	repo, _ := name.NewRepository(host + "/iris")
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		res, err := http.Head(fmt.Sprintf("http://%s/v2/iris/blobs/%s", host, d.Digest))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("blob %s: registry answers %s after the upload", d.Digest, res.Status)
		}
	}
	if tags, err := remote.List(repo); err == nil && len(tags) != 0 {
		t.Errorf("tags %v after an upload, want none", tags)
	}
	reqs.take()
	// The push after it sends the manifest only.
	if _, err := p.Push(ctx, img, []string{ref}, gantry.Discard); err != nil {
		t.Fatalf("Push: %v", err)
	}
	if n := reqs.take(); n["PUT blob"]+n["POST blob"]+n["HEAD blob"] != 0 {
		t.Errorf("the push after an upload made blob requests: %v", n)
	}
}

// TestUploadOfAnExtendedImageSendsOnlyItsNewBlobs uploads an image, then
// the image with one more layer: the second upload asks about and sends
// only the new layer and config.
func TestUploadOfAnExtendedImageSendsOnlyItsNewBlobs(t *testing.T) {
	host, reqs := newCountingRegistry(t)
	base, err := random.Image(2048, 3)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := random.Layer(512, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, extra)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := New(WithKeychain(authn.NewMultiKeychain()))
	ref := host + "/iris:1"
	if err := p.Upload(ctx, base, []string{ref}); err != nil {
		t.Fatalf("Upload of the base: %v", err)
	}
	reqs.take()
	if err := p.Upload(ctx, img, []string{ref}); err != nil {
		t.Fatalf("Upload of the extended image: %v", err)
	}
	if n := reqs.take(); n["HEAD blob"] != 2 || n["PUT blob"] != 2 {
		t.Errorf("blob requests %v, want a HEAD and a PUT for each of the new layer and config", n)
	}
	reqs.take()
	if _, err := p.Push(ctx, img, []string{ref}, gantry.Discard); err != nil {
		t.Fatalf("Push: %v", err)
	}
	if n := reqs.take(); n["PUT blob"]+n["POST blob"]+n["HEAD blob"] != 0 {
		t.Errorf("the push after the uploads made blob requests: %v", n)
	}
}
