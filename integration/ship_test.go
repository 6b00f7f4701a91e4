package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
)

// shipTrainer trains on Iris and keeps the model in the output directory;
// run with --evaluate, it loads the model it finds there, prints its
// digest, and scores it on the same held-out split without training.
const shipTrainer = `
import hashlib, os, sys
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

path = os.path.join(os.environ["GANTRY_OUTPUT_DIR"], "model.joblib")
X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
if "--evaluate" in sys.argv:
    model = joblib.load(path)
    with open(path, "rb") as f:
        print("model sha256:" + hashlib.sha256(f.read()).hexdigest())
else:
    model = LogisticRegression(max_iter=500).fit(X_train, y_train)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    joblib.dump(model, path)
print("Model accuracy: %.4f" % model.score(X_test, y_test), flush=True)
`

// modelDigest returns the digest job j's record lists for model.joblib.
func modelDigest(t *testing.T, j *gantry.Job) string {
	t.Helper()
	if j.Outputs != nil {
		for _, f := range j.Outputs.Files {
			if f.Path == "model.joblib" {
				return f.Digest
			}
		}
	}
	t.Fatalf("job %s recorded no model.joblib in its outputs: %+v", j.ID, j.Outputs)
	return ""
}

// startEngine starts a Docker engine of its own, which never saw a job of
// the tests: its own data and exec roots, pid file and socket, no firewall
// rules, in the host's network namespace (so it reaches the registry on
// 127.0.0.1). Its default network is a bridge made for it: with
// --bridge=none, dockerd deletes the docker0 interface of the namespace,
// which the main engine's containers need. It is stopped, its mounts undone,
// its bridge and directories removed when the test ends. It returns the
// host to give docker -H.
func startEngine(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gantry-engine-") // short: the socket's path is bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove the second dockerd's directory: %v", err)
		}
	})
	bridge := fmt.Sprintf("gantryit%04x", rand.IntN(1<<16))
	subnet := fmt.Sprintf("10.199.%d.1/24", rand.IntN(256))
	for _, args := range [][]string{{"link", "add", "name", bridge, "type", "bridge"}, {"addr", "add", subnet, "dev", bridge}, {"link", "set", bridge, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", bridge).Run()
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", bridge).CombinedOutput(); err != nil {
			t.Errorf("remove the second dockerd's bridge %s: %v: %s", bridge, err, out)
		}
	})
	host := "unix://" + dir + "/docker.sock"
	cmd := exec.Command("/usr/sbin/dockerd", "--data-root", dir+"/data", "--exec-root", dir+"/exec",
		"--pidfile", dir+"/docker.pid", "-H", host, "--bridge", bridge,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a second dockerd: %v", err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		// The engine says when its API listens; the rest is kept for
		// a failure's message.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "API listen on") {
				close(ready)
				break
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { stopEngine(t, cmd, exited, dir) })
	// It says when it listens, or exits: no timer (the test's own
	// deadline bounds a dockerd that does neither).
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("the second dockerd exited before it listened:\n%s", log.String())
	}
	return host
}

// stopEngine stops the engine startEngine started (SIGTERM, then SIGKILL)
// and undoes the mounts it left under dir.
func stopEngine(t *testing.T, cmd *exec.Cmd, exited <-chan struct{}, dir string) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-exited
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	var under []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			under = append(under, f[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(under))) // the deepest first
	for _, m := range under {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

// docker runs the docker CLI against host and returns its output.
func docker(t *testing.T, host string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"-H", host}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The Iris job of gantry init pushes its image with the model in it
// (--outputs=layer, the default): an engine that never saw the job pulls
// the pushed reference and runs it without a network, with --evaluate; it
// finds the model where the trainer wrote it, the very file the record
// lists, and scores it as the job did, without training.
func TestShippedModelRunsInAnotherEngine(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	app := filepath.Join(t.TempDir(), "ml-docker-app")
	d.mustGantry("init", "--base", base, app)
	ref := uniqueRef(t)
	id := d.submit(app, "--push", ref)
	removeJobImage(t, id)
	j := d.waitJob(id, 3*time.Minute)
	if j.State != gantry.StateSucceeded || j.Metrics.Accuracy == nil {
		t.Fatalf("job %s: %s (%q), accuracy %v; want succeeded with one", id, j.State, j.Error, j.Metrics.Accuracy)
	}
	want := modelDigest(t, j)
	served := servedDigest(t, ref)
	if p := j.Provenance; p == nil || p.Shipped != served || p.Built == "" || p.Built == served {
		t.Fatalf("provenance %+v: want shipped %s (what the registry serves), built another", p, served)
	}
	if j.Outputs.Layer == nil {
		t.Fatalf("job %s recorded no output layer", id)
	}

	host := startEngine(t)
	docker(t, host, "pull", "-q", ref)
	out := docker(t, host, "run", "--rm", "--network", "none", ref, "--evaluate")
	if acc := fmt.Sprintf("Model accuracy: %.4f", *j.Metrics.Accuracy); !strings.Contains(out, acc) {
		t.Errorf("the pulled image, run with --evaluate, printed:\n%s\nwant what the job recorded, %q", out, acc)
	}
	sum := docker(t, host, "run", "--rm", "--network", "none", "--entrypoint", "sha256sum", ref, "/output/model.joblib")
	if !strings.HasPrefix(sum, strings.TrimPrefix(want, "sha256:")+" ") {
		t.Errorf("the pulled image's model: %s\nwant the digest the record lists, %s", sum, want)
	}
	if env := docker(t, host, "image", "inspect", "-f", "{{json .Config.Env}}", ref); !strings.Contains(env, "GANTRY_OUTPUT_DIR=/output") {
		t.Errorf("the pulled image's env %s, want GANTRY_OUTPUT_DIR=/output", env)
	}
}

// outputsArtifacts returns the artifacts of outputs that refer to digest in
// ref's repository, as go-containerregistry finds them.
func outputsArtifacts(t *testing.T, ref, digest string) []v1.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(r.Context().Digest(digest), remote.WithFilter("artifactType", gantry.OutputsType))
	if err != nil {
		t.Fatalf("referrers of %s: %v", digest, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Descriptor
	for _, desc := range m.Manifests {
		if desc.ArtifactType == gantry.OutputsType {
			out = append(out, desc)
		}
	}
	return out
}

// --outputs=artifact pushes the built image unchanged and the model beside
// it, fetchable by the image's digest; --outputs=none pushes the built image
// and nothing else.
func TestOutputsArtifactAndNone(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, shipTrainer)
	// Two repositories: both jobs build the same image (identical inputs,
	// identical image), and referrers are a repository's.
	refs := map[string]string{gantry.ShipArtifact: uniqueRepo(t) + ":artifact", gantry.ShipNone: uniqueRepo(t) + ":none"}
	ids := map[string]string{}
	for ship, ref := range refs {
		ids[ship] = d.submit(dir, "--push", ref, "--outputs", ship)
	}
	for ship, ref := range refs {
		j := d.waitJob(ids[ship], 3*time.Minute)
		if j.State != gantry.StateSucceeded {
			t.Fatalf("--outputs=%s: job %s %s (%q), want succeeded", ship, j.ID, j.State, j.Error)
		}
		served := servedDigest(t, ref)
		if p := j.Provenance; p == nil || p.Built != served || p.Shipped != served {
			t.Errorf("--outputs=%s: provenance %+v, want built and shipped %s (what the registry serves)", ship, p, served)
		}
		arts := outputsArtifacts(t, ref, served)
		if ship == gantry.ShipNone {
			if len(arts) != 0 {
				t.Errorf("--outputs=none: %d outputs artifacts refer to the image, want none", len(arts))
			}
			continue
		}
		if len(arts) != 1 {
			t.Fatalf("--outputs=artifact: %d outputs artifacts refer to %s, want 1", len(arts), served)
		}
		checkModelArtifact(t, ref, arts[0].Digest.String(), modelDigest(t, j))
	}
}

// checkModelArtifact checks that the artifact at digest holds model.joblib
// with the digest want, and serves those bytes.
func checkModelArtifact(t *testing.T, ref, digest, want string) {
	t.Helper()
	r, _ := name.ParseReference(ref)
	img, err := remote.Image(r.Context().Digest(digest))
	if err != nil {
		t.Fatalf("fetch the outputs artifact %s: %v", digest, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.Annotations["org.opencontainers.image.title"] != "model.joblib" {
			continue
		}
		if l.Digest.String() != want {
			t.Errorf("the artifact's model.joblib has digest %s, the record lists %s", l.Digest, want)
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			t.Fatal(err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("the registry served model.joblib with digest %s, want %s", got, want)
		}
		return
	}
	t.Errorf("the outputs artifact %s has no model.joblib: %+v", digest, m.Layers)
}
