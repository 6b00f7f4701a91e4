package daemon

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/registry"
)

// shipKeep keeps files (path to content) as a job's outputs in d's data
// dir, as the copy out of the container does, and returns their record.
func shipKeep(t *testing.T, d *Daemon, dir string, files map[string]string) *gantry.Outputs {
	t.Helper()
	outs := &gantry.Outputs{Dir: dir}
	for p, content := range files {
		sum := sha256.Sum256([]byte(content))
		f := gantry.OutputFile{Path: p, Size: int64(len(content)), Digest: "sha256:" + hex.EncodeToString(sum[:]), Mode: 0o640}
		if err := os.MkdirAll(filepath.Dir(d.outputBlob(f.Digest)), 0o700); err != nil {
			t.Fatal(err)
		}
		pipeWriteFile(t, d.outputBlob(f.Digest), content)
		outs.Files = append(outs.Files, f)
		outs.Bytes += f.Size
	}
	slices.SortFunc(outs.Files, func(a, b gantry.OutputFile) int { return strings.Compare(a.Path, b.Path) })
	return outs
}

// shipEntry is a tar entry as a test looks at it.
type shipEntry struct {
	Name    string
	Type    byte
	Mode    int64
	UID     int
	GID     int
	ModTime int64
	Content string
}

// shipRead reads the gzipped tar at path.
func shipRead(t *testing.T, path string) []shipEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Header.Name != "" || !zr.Header.ModTime.IsZero() {
		t.Errorf("gzip header has name %q, time %v: want neither", zr.Header.Name, zr.Header.ModTime)
	}
	var out []shipEntry
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, shipEntry{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime.Unix(), string(b)})
	}
}

func TestOutputLayerIsDeterministic(t *testing.T) {
	files := map[string]string{"model.joblib": "weights", "ckpt/epoch-1.pt": "one", "ckpt/epoch-2.pt": "two"}
	r := pipeNewRig(t, 1, pipeNewFakes(t))
	outs := shipKeep(t, r.d, "/opt/ml/model", files)
	first, err := r.d.buildLayer(context.Background(), outs)
	if err != nil {
		t.Fatalf("buildLayer: %v", err)
	}
	// Another gantryd on the same data dir, the record read back.
	again := pipeNewDaemon(t, r.dir, 1, r.st, r.f)
	var back gantry.Outputs
	if err := json.Unmarshal([]byte(pipeJSON(outs)), &back); err != nil {
		t.Fatal(err)
	}
	second, err := again.buildLayer(context.Background(), &back)
	if err != nil {
		t.Fatalf("buildLayer again: %v", err)
	}
	if first != second {
		t.Errorf("two builds of the same files: %+v and %+v, want the same", first, second)
	}
	fi, err := os.Stat(r.d.outputLayer(first.Digest))
	if err != nil || fi.Size() != first.Size {
		t.Fatalf("kept layer: %v (size %d, recorded %d)", err, fi.Size(), first.Size)
	}
	if left, _ := filepath.Glob(filepath.Join(r.d.OutputsDir(), "layers", "building-*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}

	dir := func(n string) shipEntry { return shipEntry{Name: n, Type: tar.TypeDir, Mode: 0o755} }
	file := func(n, c string) shipEntry { return shipEntry{Name: n, Type: tar.TypeReg, Mode: 0o640, Content: c} }
	want := []shipEntry{
		dir("opt/"), dir("opt/ml/"), dir("opt/ml/model/"), dir("opt/ml/model/ckpt/"),
		file("opt/ml/model/ckpt/epoch-1.pt", "one"), file("opt/ml/model/ckpt/epoch-2.pt", "two"),
		file("opt/ml/model/model.joblib", "weights"),
	}
	if got := shipRead(t, r.d.outputLayer(first.Digest)); pipeJSON(got) != pipeJSON(want) {
		t.Errorf("layer entries:\n got %s\nwant %s", pipeJSON(got), pipeJSON(want))
	}

	files["model.joblib"] = "other weights"
	other, err := r.d.buildLayer(context.Background(), shipKeep(t, r.d, "/opt/ml/model", files))
	if err != nil {
		t.Fatalf("buildLayer: %v", err)
	}
	if other.Digest == first.Digest || other.DiffID == first.DiffID {
		t.Errorf("different files gave the same layer %s", other.Digest)
	}
}

func TestOutputLayerRefusesAPathOutOfTheDirectory(t *testing.T) {
	r := pipeNewRig(t, 1, pipeNewFakes(t))
	outs := shipKeep(t, r.d, "/output", map[string]string{"model": "w"})
	for _, p := range []string{"../etc/passwd", "/abs", "a/../../b", "a//b"} {
		outs.Files[0].Path = p
		if _, err := r.d.buildLayer(context.Background(), outs); !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("output file %q: %v, want ErrInvalid", p, err)
		}
	}
}

// shipRegistry is go-containerregistry's in-process registry, keeping the
// digests of the blobs uploaded to it (by the PUT that ends an upload) and
// the requests made for blobs.
type shipRegistry struct {
	host string
	mu   sync.Mutex
	puts []string
	reqs []string
}

func newShipRegistry(t *testing.T) *shipRegistry {
	r := &shipRegistry{}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/blobs/") {
			r.mu.Lock()
			r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
			if d := req.URL.Query().Get("digest"); req.Method == http.MethodPut && d != "" {
				r.puts = append(r.puts, d)
			}
			r.mu.Unlock()
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(s.Close)
	r.host = strings.TrimPrefix(s.URL, "http://")
	return r
}

// take returns the blob requests and uploads since the last take.
func (r *shipRegistry) take() (reqs, puts []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reqs, puts, r.reqs, r.puts = r.reqs, r.puts, nil, nil
	return reqs, puts
}

// shipRig is a daemon with the fakes but a real Pusher, to an in-process
// registry.
type shipRig struct {
	*pipeRig
	reg    *shipRegistry
	pusher *shipPusher
}

// shipPusher is the real Pusher; onPush, when set, runs before each Push.
type shipPusher struct {
	*registry.Pusher
	onPush func()
}

func (p *shipPusher) Push(ctx context.Context, img v1.Image, refs []string, rep gantry.Reporter) ([]gantry.Push, error) {
	if p.onPush != nil {
		p.onPush()
	}
	return p.Pusher.Push(ctx, img, refs, rep)
}

func newShipRig(t *testing.T) *shipRig {
	t.Helper()
	f := pipeNewFakes(t)
	dir := t.TempDir()
	bolt := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
	t.Cleanup(func() { bolt.Close() })
	p := &shipPusher{Pusher: registry.New(registry.WithKeychain(authn.NewMultiKeychain()))}
	d, err := New(Config{
		DataDir: dir, Instance: pipeInstance, MaxJobs: 1, StopTimeout: time.Second,
		Policy: gantry.Policy{ContextBytes: 1 << 20, ContextEntries: 100},
		Logger: slog.New(slog.DiscardHandler),
	}, bolt, f.builder, f.engine, p, f.source.read)
	if err != nil {
		t.Fatal(err)
	}
	return &shipRig{pipeRig: &pipeRig{dir: dir, st: bolt, d: d, f: f}, reg: newShipRegistry(t), pusher: p}
}

// blobsOf returns the digests of img's config and layers.
func shipBlobsOf(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// shipReferrers returns the artifacts of artifactType that refer to digest
// in ref's repository, as go-containerregistry finds them (the referrers
// API, or the tag scheme's fallback).
func shipReferrers(t *testing.T, ref, digest, artifactType string) []v1.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(r.Context().Digest(digest), remote.WithFilter("artifactType", artifactType))
	if err != nil {
		t.Fatalf("referrers of %s: %v", digest, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(m.Manifests, func(d v1.Descriptor) bool { return d.ArtifactType != artifactType })
}

// shipPulled reads what the registry serves for ref.
func shipPulled(t *testing.T, ref string) (v1.Image, string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return img, d.String()
}

func TestPushShipsTheOutputs(t *testing.T) {
	ctx := context.Background()
	files := map[string]string{"model.joblib": "the scored weights", "metrics/eval.json": `{"accuracy":0.97}`}
	for _, ship := range []string{gantry.ShipLayer, gantry.ShipArtifact, gantry.ShipNone} {
		t.Run(ship, func(t *testing.T) {
			r := newShipRig(t)
			ref := r.reg.host + "/iris:1"
			outs := shipKeep(t, r.d, "/output", files)
			spec := gantry.Spec{Push: []string{ref}, Outputs: gantry.OutputSpec{Dir: "/output", Ship: ship}}
			j := pipeRecord(t, r.st, gantry.NewJob(spec, time.Now()), func(j *gantry.Job) {
				j.GatePassed, j.Image, j.Outputs = true, pipeImageID(j.ID), outs
			}, gantry.StateBuilding, gantry.StateRunning, gantry.StateSucceeded)
			built, _ := r.f.source.img.Digest()

			j, err := r.d.Push(ctx, j.ID, nil, gantry.Discard)
			if err != nil {
				t.Fatalf("Push: %v", err)
			}
			pushed, digest := shipPulled(t, ref)
			if p := j.Provenance; p == nil || p.Built != built.String() || p.Shipped != digest || pipeJSON(p.Outputs) != pipeJSON(j.Outputs) {
				t.Errorf("provenance %s, want built %s, shipped %s and the outputs", pipeJSON(p), built, digest)
			}
			data, err := r.pusher.Attached(ctx, ref, digest, gantry.ProvenanceType)
			if err != nil || !strings.Contains(string(data), `"shipped":"`+digest+`"`) {
				t.Errorf("provenance attached to %s: %s, %v", digest, data, err)
			}
			if ship == gantry.ShipLayer {
				shipCheckLayer(t, r.d, j, r.f.source.img, pushed)
			} else if digest != built.String() {
				t.Errorf("pushed %s, want the built image %s unchanged", digest, built)
			}
			arts := shipReferrers(t, ref, digest, gantry.OutputsType)
			if ship == gantry.ShipArtifact {
				if len(arts) != 1 {
					t.Fatalf("%d outputs artifacts refer to %s, want 1", len(arts), digest)
				}
				shipCheckArtifact(t, ref, arts[0].Digest.String(), digest, outs)
			} else if len(arts) != 0 {
				t.Errorf("%d outputs artifacts refer to %s, want none", len(arts), digest)
			}

			// A second reference: manifests, and none of the image's
			// blobs or the files again.
			r.reg.take()
			if _, err := r.d.Push(ctx, j.ID, []string{r.reg.host + "/iris:2"}, gantry.Discard); err != nil {
				t.Fatalf("Push to a second reference: %v", err)
			}
			_, puts := r.reg.take()
			sent := shipBlobsOf(t, pushed)
			for _, f := range outs.Files {
				sent = append(sent, f.Digest)
			}
			for _, p := range puts {
				if slices.Contains(sent, p) {
					t.Errorf("the push to a second reference sent blob %s again", p)
				}
			}
			if _, d := shipPulled(t, r.reg.host+"/iris:2"); d != digest {
				t.Errorf("second reference serves %s, want %s", d, digest)
			}
		})
	}
}

// shipCheckLayer checks that pushed is built plus the job's output layer,
// with GANTRY_OUTPUT_DIR set.
func shipCheckLayer(t *testing.T, d *Daemon, j *gantry.Job, built, pushed v1.Image) {
	t.Helper()
	l := j.Outputs.Layer
	if l == nil {
		t.Fatalf("no output layer recorded")
	}
	want := append(shipBlobsOf(t, built)[1:], l.Digest)
	if got := shipBlobsOf(t, pushed)[1:]; !slices.Equal(got, want) {
		t.Errorf("pushed layers %v, want the built ones and the output layer: %v", got, want)
	}
	cf, err := pushed.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cf.Config.Env, "GANTRY_OUTPUT_DIR=/output") {
		t.Errorf("pushed image's env %v, want GANTRY_OUTPUT_DIR=/output", cf.Config.Env)
	}
	if n := len(cf.RootFS.DiffIDs); n == 0 || cf.RootFS.DiffIDs[n-1].String() != l.DiffID {
		t.Errorf("pushed image's diff IDs %v, want the output layer's %s last", cf.RootFS.DiffIDs, l.DiffID)
	}
	if h := cf.History; len(h) == 0 || !strings.Contains(h[len(h)-1].CreatedBy, j.ID) {
		t.Errorf("pushed image's history %+v, want the outputs of job %s last", h, j.ID)
	}
	if _, err := os.Stat(d.outputLayer(l.Digest)); err != nil {
		t.Errorf("output layer not kept: %v", err)
	}
}

// shipCheckArtifact checks the outputs artifact at digest in ref's
// repository: its subject, its empty config, a layer per file.
func shipCheckArtifact(t *testing.T, ref, digest, subject string, outs *gantry.Outputs) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r.Context().Digest(digest))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject == nil || m.Subject.Digest.String() != subject || m.ArtifactType != gantry.OutputsType {
		t.Errorf("artifact's subject %v, type %q: want %s, %s", m.Subject, m.ArtifactType, subject, gantry.OutputsType)
	}
	if m.Config.MediaType != "application/vnd.oci.empty.v1+json" || m.Config.Size != 2 {
		t.Errorf("artifact's config %+v, want the empty one", m.Config)
	}
	var got, want []string
	for _, l := range m.Layers {
		got = append(got, l.Annotations["org.opencontainers.image.title"]+" "+l.Digest.String()+" "+string(l.MediaType))
	}
	for _, f := range outs.Files {
		want = append(want, f.Path+" "+f.Digest+" application/octet-stream")
	}
	if !slices.Equal(got, want) {
		t.Errorf("artifact's layers %v, want %v", got, want)
	}
}

// TestJobShipsItsOutputsWithManifestsOnly runs a job that pushes: its
// output layer goes up while the gate is decided, and the push after it
// sends no blob of the image.
func TestJobShipsItsOutputsWithManifestsOnly(t *testing.T) {
	r := newShipRig(t)
	r.f.engine.copyFrom = func(context.Context, string, string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(outModel(t, "weights"))), nil
	}
	var early []string
	r.pusher.onPush = func() { _, early = r.reg.take() }
	pipeRun(t, r.d)
	ref := r.reg.host + "/iris:1"
	j := pipeWait(t, r.d, pipeSubmit(t, r.d, gantry.Spec{Push: []string{ref}}).ID)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("state %s (%s), want succeeded", j.State, j.Error)
	}
	if j.Outputs == nil || j.Outputs.Layer == nil {
		t.Fatalf("outputs %s: want the layer recorded", pipeJSON(j.Outputs))
	}
	if !slices.Contains(early, j.Outputs.Layer.Digest) {
		t.Errorf("blobs uploaded before the push %v, want the output layer %s among them", early, j.Outputs.Layer.Digest)
	}
	pushed, digest := shipPulled(t, ref)
	reqs, _ := r.reg.take()
	for _, b := range shipBlobsOf(t, pushed) {
		for _, q := range reqs {
			if strings.Contains(q, b) {
				t.Errorf("the push asked for blob %s of the image: %s", b, q)
			}
		}
	}
	if j.Provenance == nil || j.Provenance.Shipped != digest || j.Provenance.Built == digest {
		t.Errorf("provenance %s: want shipped %s, built another", pipeJSON(j.Provenance), digest)
	}
	shipCheckLayer(t, r.d, j, r.f.source.img, pushed)
}

func TestOutputLayerOfFilesNoLongerKept(t *testing.T) {
	r := pipeNewRig(t, 1, pipeNewFakes(t))
	outs := shipKeep(t, r.d, "/output", map[string]string{"model": "w"})
	os.Remove(r.d.outputBlob(outs.Files[0].Digest))
	if _, err := r.d.buildLayer(context.Background(), outs); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("buildLayer of a file no longer kept: %v, want ErrNotFound", err)
	}
}
