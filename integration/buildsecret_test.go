package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
)

// secretTrainer prints the hashes the build wrote of the two secrets it
// mounted, then an accuracy.
const secretTrainer = `print(open("/hash").read(), flush=True)
print("Model accuracy: 0.9")
`

// The build mounts its secrets (one from a file, one from the CLI's
// environment) and the image shows it saw them (their hashes), yet neither
// value is anywhere: gantryd's data dir, its log, the job's log, build
// status, gantry inspect, the events, the provenance artifact, or the
// image's config and layers as the registry serves them.
func TestBuildSecretAppearsNowhere(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	fileVal, envVal := randomSecret(t), randomSecret(t)
	secretFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(secretFile, []byte(fileVal), 0o600); err != nil {
		t.Fatal(err)
	}
	// A secret is not part of BuildKit's cache key (as with buildx): the
	// nonce makes the step run.
	dir := trainerDir(t, secretTrainer,
		"RUN --mount=type=secret,id=token --mount=type=secret,id=envtok sh -c 'echo "+nonce()+" && sha256sum < /run/secrets/token > /hash && sha256sum < /run/secrets/envtok >> /hash'")
	ref := uniqueRef(t)
	out, errOut, code := d.gantryEnv([]string{"GANTRY_IT_TOKEN=" + envVal}, "submit", dir, "--push", ref,
		"--secret", "id=token,src="+secretFile, "--secret", "id=envtok,env=GANTRY_IT_TOKEN", "--build-arg", "PLAIN=visible")
	if code != 0 {
		t.Fatalf("gantry submit: exit %d\n%s\n%s", code, out, errOut)
	}
	id := strings.TrimSpace(out)
	removeJobImage(t, id)
	j := d.waitJob(id, 10*time.Minute)
	logs := d.mustGantry("logs", id)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s\n%s", j.State, j.Error, logs)
	}
	for _, v := range []string{fileVal, envVal} {
		sum := sha256.Sum256([]byte(v))
		if !strings.Contains(logs, hex.EncodeToString(sum[:])) {
			t.Errorf("the training output lacks the hash of a secret: the build did not see it\n%s", logs)
		}
	}
	if strings.Join(j.Spec.Build.Secrets, ",") != "token,envtok" {
		t.Errorf("the record names build secrets %v, want [token envtok]", j.Spec.Build.Secrets)
	}

	places := map[string][]byte{
		"the job's log":     []byte(logs),
		"gantry inspect":    []byte(d.mustGantry("inspect", id)),
		"the build status":  httpGet(t, d, "/v1/jobs/"+id+"/build"),
		"the events":        httpGet(t, d, "/v1/events?follow=0"),
		"the provenance":    fetchProvenance(t, repoOf(ref), j.Pushes[0].Digest),
		"gantryd's own log": []byte(d.log.String()),
	}
	// Controls: the search sees what is there (a build argument's value
	// in the provenance, with --provenance max).
	if !bytes.Contains(places["the provenance"], []byte("visible")) {
		t.Errorf("the provenance lacks the build argument's value: the search sees nothing")
	}
	for what, b := range places {
		if len(b) == 0 {
			t.Errorf("%s is empty: nothing was looked at", what)
		}
		checkNoSecret(t, what, bytes.NewReader(b), fileVal, envVal)
	}
	files := 0
	filepath.WalkDir(d.dataDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			return nil
		}
		defer f.Close()
		files++
		checkNoSecret(t, p, f, fileVal, envVal)
		return nil
	})
	if files < 3 {
		t.Errorf("looked at %d files under the data dir, want the store, the log and the status at least", files)
	}
	sum := sha256.Sum256([]byte(fileVal))
	checkPushedImage(t, ref, hex.EncodeToString(sum[:]), fileVal, envVal)
}

// checkPushedImage reads the image at ref as the registry serves it (its
// manifest, config and every layer, uncompressed) and fails the test when
// any holds one of values, or when none holds control (which the build
// wrote: the search sees the layers' contents).
func checkPushedImage(t *testing.T, ref, control string, values ...string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("read %s: %v", ref, err)
	}
	m, _ := img.RawManifest()
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	checkNoSecret(t, "the pushed manifest", bytes.NewReader(m), values...)
	checkNoSecret(t, "the pushed image config", bytes.NewReader(cfg), values...)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, l := range layers {
		dg, _ := l.Digest()
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatalf("layer %s: %v", dg, err)
		}
		seen = scan(t, "pushed layer "+dg.String(), rc, control, values...) || seen
		rc.Close()
	}
	if !seen {
		t.Errorf("no layer of %s holds %s, which the build wrote: the search sees nothing", ref, control)
	}
	t.Logf("looked at the manifest, the config and %d layers of %s", len(layers), ref)
}

// checkNoSecret reads r to its end and fails the test, saying where, when
// one of values occurs in it (also across the reads' boundaries).
func checkNoSecret(t *testing.T, where string, r io.Reader, values ...string) {
	t.Helper()
	scan(t, where, r, "", values...)
}

// scan is checkNoSecret that also says whether control (when not "")
// occurs in r: something that ought to be there, so that a search that
// finds nothing is seen to look.
func scan(t *testing.T, where string, r io.Reader, control string, values ...string) (sawControl bool) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var tail []byte
	for {
		n, err := r.Read(buf)
		chunk := append(tail, buf[:n]...)
		for _, v := range values {
			if bytes.Contains(chunk, []byte(v)) {
				t.Errorf("%s holds a secret's value", where)
				return sawControl
			}
		}
		sawControl = sawControl || control != "" && bytes.Contains(chunk, []byte(control))
		if keep := 256; len(chunk) > keep {
			tail = append([]byte(nil), chunk[len(chunk)-keep:]...)
		} else {
			tail = chunk
		}
		if err == io.EOF {
			return sawControl
		}
		if err != nil {
			t.Errorf("read %s: %v", where, err)
			return sawControl
		}
	}
}

// randomSecret is a value no file on this machine holds by chance.
func randomSecret(t *testing.T) string {
	var b [24]byte
	rand.Read(b[:])
	return "gantry-it-secret-" + hex.EncodeToString(b[:])
}

// httpGet reads path from gantryd's socket.
func httpGet(t *testing.T, d *gantryd, path string) []byte {
	t.Helper()
	resp, err := socketClient(d.socket).Get("http://gantry" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v\n%s", path, resp.StatusCode, err, b)
	}
	return b
}

// Two jobs of the same context build the identical image: the same engine
// image ID, the same digest pushed, and gantry diff shows no image change.
// The image's config carries no label of the job or of the daemon.
func TestIdenticalInputsIdenticalImage(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "print('Model accuracy: 0.9')\n# "+randomSecret(t)+"\n")
	repo := uniqueRepo(t)
	var jobs []*gantry.Job
	for _, tag := range []string{"a", "b"} {
		id := d.submit(dir, "--push", repo+":"+tag)
		j := d.waitJob(id, 10*time.Minute)
		if j.State != gantry.StateSucceeded {
			t.Fatalf("job %s: %s\n%s", j.State, j.Error, d.mustGantry("logs", id))
		}
		jobs = append(jobs, j)
	}
	a, b := jobs[0], jobs[1]
	if a.Image == "" || a.Image != b.Image {
		t.Errorf("images %q and %q, want the same", a.Image, b.Image)
	}
	if len(a.Pushes) == 0 || len(b.Pushes) == 0 || a.Pushes[0].Digest != b.Pushes[0].Digest {
		t.Errorf("pushed %+v and %+v, want the same digest", a.Pushes, b.Pushes)
	}
	if da, db := servedDigest(t, repo+":a"), servedDigest(t, repo+":b"); da == "" || da != db {
		t.Errorf("the registry serves %s and %s, want the same", da, db)
	}
	if diff := d.mustGantry("diff", a.ID, b.ID); strings.Contains(diff, "image:") {
		t.Errorf("gantry diff shows an image change:\n%s", diff)
	}
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{json .Config.Labels}}", a.Image).Output()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", a.Image, err)
	}
	var labels map[string]string
	json.Unmarshal(out, &labels)
	for k := range labels {
		if strings.HasPrefix(k, "io.gantry.") {
			t.Errorf("the image carries label %s", k)
		}
	}
}
