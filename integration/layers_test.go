package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/blobs"
	"github.com/gantry-ml/gantry/layers"
	"github.com/gantry-ml/gantry/runner"
)

// The layers read from the engine's layer store are the layers docker save
// gives, byte for byte: the same config, the same manifest digest. An image
// read once is not read again. The image deletes, renames and links files
// (whiteouts, an opaque directory, hard links), which the layer tar must
// carry as the engine recorded them.
func TestLayerStoreGivesWhatDockerSaveGives(t *testing.T) {
	ctx := context.Background()
	eng, err := runner.Dial(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	root, driver, err := eng.Storage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := layers.Readable(root, driver); err != nil {
		t.Skipf("the engine's layer store (%s, %s) is not readable here: %v", root, driver, err)
	}

	var b [4]byte
	rand.Read(b[:])
	tag := "gantry-it/layerstore:" + hex.EncodeToString(b[:])
	dir := trainerDir(t, "print('Model accuracy: 0.5')\n",
		"RUN rm -rf /usr/share/doc/python3* && mkdir -p /opt/m && echo one > /opt/m/a && ln /opt/m/a /opt/m/b",
		"RUN rm -rf /opt/m && mkdir -p /opt/m && echo two > /opt/m/c && printf 'x' > '/opt/m/sp ace'")
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })

	read := func(useStore bool) (v1.Image, map[string]int, *layers.Source) {
		cache, err := blobs.Open(t.TempDir(), 0)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		reads := map[string]int{}
		src := &layers.Source{Cache: cache, Engine: eng.Client(), TmpDir: t.TempDir(),
			Reads: func(how string, _ v1.Hash) { mu.Lock(); reads[how]++; mu.Unlock() }}
		if useStore {
			src.Root, src.Driver = root, driver
		}
		img, err := src.Image(ctx, tag)
		if err != nil {
			t.Fatalf("Image (layer store %v): %v", useStore, err)
		}
		return img, reads, src
	}
	fromStore, storeReads, src := read(true)
	fromSave, saveReads, _ := read(false)

	ls, _ := fromStore.Layers()
	if storeReads["store"] != len(ls) || storeReads["save"] != 0 {
		t.Errorf("reads through the layer store %v, want all %d layers from the store", storeReads, len(ls))
	}
	if saveReads["save"] != len(ls) {
		t.Errorf("reads without the layer store %v, want all %d through docker save", saveReads, len(ls))
	}
	d1, _ := fromStore.Digest()
	d2, _ := fromSave.Digest()
	if d1 != d2 {
		m1, _ := fromStore.RawManifest()
		m2, _ := fromSave.RawManifest()
		t.Fatalf("manifest from the layer store %s differs from docker save's %s:\n%s\n%s", d1, d2, m1, m2)
	}
	id, err := eng.ImageID(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := fromStore.ConfigName(); cfg.String() != id {
		t.Errorf("config %s, the engine's image ID is %s", cfg, id)
	}

	// Again: nothing is read.
	clear(storeReads)
	if _, err := src.Image(ctx, tag); err != nil {
		t.Fatal(err)
	}
	if len(storeReads) != 0 {
		t.Errorf("the second read of the image read layers again: %v", storeReads)
	}
}

// A job's layers go to the registry while it trains: the push after the
// gate sends manifests only. So does gantry push of the same image again.
// gantryd keeps each layer compressed once, and can push the image from
// there once the engine has lost it.
func TestPushAfterTheGateSendsOnlyManifests(t *testing.T) {
	d := startDaemon(t)
	app := filepath.Join(t.TempDir(), "ml-docker-app")
	d.mustGantry("init", "--base", base, app)
	ref := uniqueRef(t)
	id := d.submit(app, "--push", ref)
	removeJobImage(t, id)
	j := d.waitJob(id, 5*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("state %s (%s), want succeeded\n%s", j.State, j.Error, d.mustGantry("logs", id))
	}
	if !strings.Contains(d.log.String(), "image layers uploaded during training") {
		t.Errorf("gantryd did not log the upload during training:\n%s", d.log.String())
	}
	// Layers BuildKit made are read from the layer store as well, when
	// gantryd may read it.
	if strings.Contains(d.log.String(), "are read from the engine's layer store") {
		if strings.Contains(d.log.String(), "via=save") || strings.Contains(d.log.String(), "not readable from the engine's layer store") {
			t.Errorf("gantryd fell back to docker save for an image BuildKit built:\n%s", d.log.String())
		}
		if !strings.Contains(d.log.String(), "via=store") {
			t.Errorf("gantryd read no layer from the layer store:\n%s", d.log.String())
		}
	}
	logs := d.mustGantry("logs", id)
	if n := strings.Count(logs, "manifest only"); n != len(j.Pushes) {
		t.Errorf("%d of the %d pushes after the gate sent the manifest only:\n%s", n, len(j.Pushes), logs)
	}
	for _, p := range j.Pushes {
		if served := servedDigest(t, p.Ref); served != p.Digest {
			t.Errorf("%s: recorded %s, registry serves %s", p.Ref, p.Digest, served)
		}
	}

	// gantry push of the unchanged image, to a new tag of the repository.
	again := repoOf(ref) + ":again"
	out, errOut, code := d.gantry("push", id, "--to", again)
	if code != 0 {
		t.Fatalf("gantry push: exit %d\n%s\n%s", code, out, errOut)
	}
	// The CLI shows the push's progress; gantryd logs it too.
	if !strings.Contains(errOut, "sent the manifest only") {
		t.Errorf("gantry push of an unchanged image sent more than its manifest:\n%s", errOut)
	}
	if !regexp.MustCompile(`msg=push job=` + id + ` progress=".*manifest only`).MatchString(d.log.String()) {
		t.Errorf("gantryd did not log the push's progress:\n%s", d.log.String())
	}
	if !strings.Contains(out, "pushed "+again+"@"+j.Pushes[0].Digest) || strings.Contains(errOut, "pushed ") {
		t.Errorf("gantry push printed\nstdout:\n%s\nstderr:\n%s\nwant the pushed reference on stdout only", out, errOut)
	}
	if served := servedDigest(t, again); served != j.Pushes[0].Digest {
		t.Errorf("%s serves %s, want the job's %s", again, served, j.Pushes[0].Digest)
	}

	// Removed from the engine, the image is still pushed from its kept
	// blobs.
	if out, err := exec.Command("docker", "rmi", j.ImageName).CombinedOutput(); err != nil {
		t.Fatalf("docker rmi %s: %v\n%s", j.ImageName, err, out)
	}
	afterRmi := repoOf(ref) + ":after-rmi"
	if out, errOut, code := d.gantry("push", id, "--to", afterRmi); code != 0 {
		t.Fatalf("gantry push of a job whose image was removed from the engine: exit %d\n%s\n%s", code, out, errOut)
	}
	if served := servedDigest(t, afterRmi); served != j.Pushes[0].Digest {
		t.Errorf("%s serves %s, want the job's %s", afterRmi, served, j.Pushes[0].Digest)
	}

	// The kept blobs: the image's config and layers, once each.
	diffIDs, err := os.ReadDir(filepath.Join(d.dataDir, "blobs", "diffid"))
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := os.ReadDir(filepath.Join(d.dataDir, "blobs", "sha256"))
	if len(diffIDs) == 0 || len(kept) != len(diffIDs)+1 {
		t.Errorf("the blob store holds %d blobs for %d layers, want the layers and one config", len(kept), len(diffIDs))
	}
	// The metrics say the same: each layer read and compressed once.
	var keptBytes int64
	for _, b := range kept {
		if info, err := b.Info(); err == nil {
			keptBytes += info.Size()
		}
	}
	got, err := scrapeMetrics(socketClient(d.socket))
	if err != nil {
		t.Fatal(err)
	}
	read := got[`gantry_layers_compressed_total{via="store"}`] + got[`gantry_layers_compressed_total{via="save"}`]
	if read != float64(len(diffIDs)) || got[`gantry_blob_store_bytes`] != float64(keptBytes) {
		t.Errorf("metrics: %v layers compressed, blob store %v bytes; want %d layers, %d bytes", read, got[`gantry_blob_store_bytes`], len(diffIDs), keptBytes)
	}
}
