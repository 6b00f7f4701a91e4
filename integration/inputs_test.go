package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/treesum"
)

// overrideProgram replaces the image's command: it shows what the job gave
// it (--env, a hash of --secret-env's value, never the value, the size of
// /dev/shm) and reports an accuracy.
const overrideProgram = `import hashlib, os
print("the override ran")
print("GREETING=" + os.environ.get("GREETING", "<unset>"))
print("token sha256 " + hashlib.sha256(os.environ["TOKEN"].encode()).hexdigest())
s = os.statvfs("/dev/shm")
print("shm bytes", s.f_blocks * s.f_frsize)
print("Model accuracy: 0.95")
`

// --env and -- CMD are recorded and reach the trainer; --secret-env's value
// reaches it too, and no file under gantryd's data dir (the bbolt file
// included), gantryd's own output, the job's log or any blob the job pushed
// holds it; --shm-size sizes /dev/shm.
func TestEnvSecretAndCommandReachTheTrainer(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	var b [12]byte
	rand.Read(b[:])
	secret := "gantry-it-secret-" + hex.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(secret))
	ref := uniqueRef(t)
	cmd := []string{"python3", "-u", "-c", overrideProgram}
	out, errOut, code := d.gantryEnv([]string{"TOKEN=" + secret}, append([]string{"submit",
		trainerDir(t, "print('the image command ran')\nprint('Model accuracy: 0.5')\n"),
		"--env", "GREETING=hello", "--secret-env", "TOKEN", "--shm-size", "128m", "--push", ref, "--"}, cmd...)...)
	id := strings.TrimSpace(out)
	if code != 0 || !gantry.ValidID(id) {
		t.Fatalf("gantry submit: exit %d, %q, %s", code, out, errOut)
	}
	removeJobImage(t, id)
	j := d.waitJob(id, 3*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s), want succeeded:\n%s", j.State, j.Error, d.mustGantry("logs", id))
	}
	logs := d.mustGantry("logs", id)
	for _, want := range []string{"the override ran", "GREETING=hello", "token sha256 " + hex.EncodeToString(sum[:]), "shm bytes 134217728"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the trainer's output lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "the image command ran") {
		t.Errorf("the image's command ran, not the one after --")
	}
	r := j.Spec.Run
	if !slices.Equal(r.Cmd, cmd) || !slices.Equal(r.Env, []string{"GREETING=hello"}) || !slices.Equal(r.SecretEnv, []string{"TOKEN"}) || r.ShmSize != 128<<20 {
		t.Errorf("recorded run %+v; want the command, GREETING, the name TOKEN and 128m", r)
	}
	if left := leftoverContainers(t, id); left != "" {
		t.Errorf("the container (whose config holds the environment) is left: %s", left)
	}
	assertNowhere(t, secret, map[string]string{
		"gantry logs":      logs,
		"gantry inspect":   d.mustGantry("inspect", id),
		"gantryd's output": d.log.String(),
	})
	assertNotInDir(t, secret, d.dataDir)
	assertNotInRepo(t, secret, repoOf(ref))
}

func assertNowhere(t *testing.T, secret string, texts map[string]string) {
	t.Helper()
	for what, text := range texts {
		if strings.Contains(text, secret) {
			t.Errorf("%s holds the secret's value", what)
		}
	}
}

// assertNotInDir fails when any file under dir holds secret.
func assertNotInDir(t *testing.T, secret, dir string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the secret's value", p)
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walk %s: %v (%d files)", dir, err, files)
	}
}

// assertNotInRepo fails when any manifest or blob of repository repo, or of
// the artifacts that refer to its images, holds secret (layers read
// uncompressed). The base image's layers are left out: they were made before
// the secret existed.
func assertNotInRepo(t *testing.T, secret, repo string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r, remote.WithContext(ctx))
	if err != nil || len(tags) == 0 {
		t.Fatalf("list %s: %v (%d tags)", repo, err, len(tags))
	}
	base := baseDiffIDs(t)
	seen := map[string]bool{}
	var check func(ref name.Reference)
	check = func(ref name.Reference) {
		desc, err := remote.Get(ref, remote.WithContext(ctx))
		if err != nil {
			t.Fatalf("get %s: %v", ref, err)
		}
		if seen[desc.Digest.String()] {
			return
		}
		seen[desc.Digest.String()] = true
		if bytes.Contains(desc.Manifest, []byte(secret)) {
			t.Errorf("manifest %s holds the secret's value", desc.Digest)
		}
		if desc.MediaType.IsIndex() {
			idx, _ := desc.ImageIndex()
			m, _ := idx.IndexManifest()
			for _, c := range m.Manifests {
				check(r.Digest(c.Digest.String()))
			}
			return
		}
		img, err := desc.Image()
		if err != nil {
			t.Fatalf("image %s: %v", desc.Digest, err)
		}
		assertImageClean(t, secret, img, base)
		if refs, err := remote.Referrers(r.Digest(desc.Digest.String()), remote.WithContext(ctx)); err == nil {
			m, _ := refs.IndexManifest()
			for _, c := range m.Manifests {
				check(r.Digest(c.Digest.String()))
			}
		}
	}
	for _, tag := range tags {
		check(r.Tag(tag))
	}
}

// assertImageClean fails when img's config or a layer not in base holds
// secret.
func assertImageClean(t *testing.T, secret string, img v1.Image, base map[string]bool) {
	t.Helper()
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Errorf("an image config holds the secret's value")
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if diff, err := l.DiffID(); err == nil && base[diff.String()] {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			if plain, err := io.ReadAll(zr); err == nil {
				data = append(data, plain...)
			}
		}
		if bytes.Contains(data, []byte(secret)) {
			d, _ := l.Digest()
			t.Errorf("blob %s holds the secret's value", d)
		}
	}
}

// baseDiffIDs are the layers of the local base image.
func baseDiffIDs(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", base).Output()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", base, err)
	}
	var ids []string
	if err := json.Unmarshal(out, &ids); err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// datasetTrainer reads its datasets and tries to write to one.
const datasetTrainer = `import os
print("data:", open("/data/iris.csv").read().strip())
try:
    open("/data/new.txt", "w")
    print("write allowed")
except OSError as e:
    print("write refused:", e.strerror)
print("vol:", open("/vol/v.txt").read().strip())
print("Model accuracy: 0.95")
`

// A dataset under a --dataset-root and a named volume are readable and not
// writable, and the record pins the dataset by its tree; one outside every
// root, '..' out of a root, a symlink out of a root and a missing volume are
// refused at submit with a clear error, and no job is recorded.
func TestDatasets(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	root, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, dir := range []string{filepath.Join(root, "iris"), outside} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "iris", "iris.csv"), []byte("5.1,3.5,1.4,0.2,setosa\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(outside, "key"), []byte("host secret\n"), 0o644)
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	vol := makeVolume(t, map[string]string{"v.txt": "from the volume"})
	d := startDaemon(t, "--dataset-root", root)
	dir := trainerDir(t, datasetTrainer)

	for _, tc := range []struct{ src, want string }{
		{outside, "--dataset-root: " + root},
		{root + "/../outside", "'..'"},
		{root + "/escape", "leads through a symlink to " + outside},
		{"gantry-it-no-such-volume", "no such volume gantry-it-no-such-volume: create it with docker volume create"},
	} {
		out, errOut, code := d.gantry("submit", dir, "--dataset", tc.src+":/data")
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("submit --dataset %s: exit %d, %q, %q; want a refusal saying %q", tc.src, code, out, errOut, tc.want)
		}
	}
	if n := jobCount(t, d); n != 0 {
		t.Errorf("%d jobs recorded after refusals, want none", n)
	}
	if info := d.mustGantry("info"); !strings.Contains(info, root) {
		t.Errorf("gantry info does not show the dataset root:\n%s", info)
	}

	id := d.submit(dir, "--dataset", root+"/iris:/data", "--dataset", vol+":/vol")
	j := d.waitJob(id, 3*time.Minute)
	logs := d.mustGantry("logs", id)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s):\n%s", j.State, j.Error, logs)
	}
	for _, want := range []string{"data: 5.1,3.5,1.4,0.2,setosa", "write refused: Read-only file system", "vol: from the volume"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the trainer's output lacks %q:\n%s", want, logs)
		}
	}
	want, err := treesum.Tree(context.Background(), filepath.Join(root, "iris"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pins := j.Inputs.Datasets
	if len(pins) != 2 || pins[0].Digest != want.Digest || pins[0].Files != 1 || pins[1].Digest == "" {
		t.Errorf("pins %+v; want the dataset's tree %s and the volume's", pins, want.Digest)
	}
}

// makeVolume creates a named volume holding files (written through its
// mountpoint, as root) and removes it when the test ends.
func makeVolume(t *testing.T, files map[string]string) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	vol := "gantry-it-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("docker", "volume", "create", vol).CombinedOutput(); err != nil {
		t.Fatalf("docker volume create: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "volume", "rm", "-f", vol).Run() })
	out, err := exec.Command("docker", "volume", "inspect", "--format", "{{.Mountpoint}}", vol).Output()
	if err != nil {
		t.Fatalf("docker volume inspect: %v", err)
	}
	for p, content := range files {
		if err := os.WriteFile(filepath.Join(strings.TrimSpace(string(out)), p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return vol
}

// What the policy does not allow, and what no job may set, is refused at
// submit naming what to change; the API answers 403 for GPUs not allowed.
// With --allow-gpus, on an engine without a GPU runtime, the job fails at
// once with the engine's reason and the device request the engine held.
func TestGPUsAndRefusals(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "print('Model accuracy: 0.95')\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gpus", "1"}, "--allow-gpus"},
		{[]string{"--env", "GANTRY_OUTPUT_DIR=/elsewhere"}, "GANTRY_OUTPUT_DIR"},
		{[]string{"--dataset", "/etc:/data"}, "--dataset-root"},
		{[]string{"--dataset", t.TempDir() + ":/data"}, "--dataset-root"},
		{[]string{"--secret-env", "GANTRY_IT_UNSET_VAR"}, "GANTRY_IT_UNSET_VAR is not set in this shell's environment"},
	} {
		out, errOut, code := d.gantry(append([]string{"submit", dir}, tc.args...)...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("submit %v: exit %d, %q, %q; want a refusal saying %q", tc.args, code, out, errOut, tc.want)
		}
	}
	var body bytes.Buffer
	tarDir(t, dir, &body)
	resp, err := socketClient(d.socket).Post("http://gantry/v1/jobs?spec="+url.QueryEscape(`{"run":{"gpus":"1"}}`), "application/x-tar", &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST /v1/jobs with gpus: %d, want 403", resp.StatusCode)
	}
	if n := jobCount(t, d); n != 0 {
		t.Errorf("%d jobs recorded after refusals, want none", n)
	}

	g := startDaemon(t, "--allow-gpus")
	id := g.submit(dir, "--gpus", "1")
	j := g.waitJob(id, 3*time.Minute)
	for _, want := range []string{`could not select device driver "" with capabilities: [[gpu]]`, `"Count":1`, `"Capabilities":[["gpu"]]`} {
		if j.State != gantry.StateFailed || !strings.Contains(j.Error, want) {
			t.Errorf("job %s: %q; want failed saying %s", j.State, j.Error, want)
		}
	}
	if j.Spec.Run.GPUs != "1" || j.ExitCode != nil {
		t.Errorf("recorded gpus %q, exit %v; want 1 and no exit (it never started)", j.Spec.Run.GPUs, j.ExitCode)
	}
	if left := leftoverContainers(t, id); left != "" {
		t.Errorf("containers left: %s", left)
	}
}

// gantryd refuses to start with a --dataset-root that does not exist or is
// not a directory, naming the flag.
func TestDatasetRootMustExist(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, root := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		cmd := exec.Command(filepath.Join(binDir, "gantryd"), "--socket", filepath.Join(t.TempDir(), "s.sock"), "--data-dir", t.TempDir(), "--dataset-root", root)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--dataset-root "+root) {
			t.Errorf("gantryd --dataset-root %s: %v\n%s\nwant a refusal to start naming it", root, err, out)
		}
	}
}
