package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
)

// hubUser is the Docker Hub user of the tutorial, in the hub box.
const (
	hubUser     = "trainer"
	hubPassword = "trainer-s3cret"
)

// hubTutorial is one gantryd whose environment holds the docker config
// that `docker login` (no server) wrote, in a running hub box.
type hubTutorial struct {
	t      *testing.T
	box    *hubBox
	d      *gantryd
	config string // DOCKER_CONFIG of the docker CLI and gantryd
}

func startHubTutorial(t *testing.T) *hubTutorial {
	t.Helper()
	h := &hubTutorial{t: t, box: startHubBox(t, map[string]string{hubUser: hubPassword, "otheruser": "other-pw"}), config: t.TempDir()}
	if out, err := h.docker("login", "-u", hubUser, "-p", hubPassword); err != nil {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	var cfg struct{ Auths map[string]json.RawMessage }
	b, _ := os.ReadFile(filepath.Join(h.config, "config.json"))
	if json.Unmarshal(b, &cfg); cfg.Auths["https://index.docker.io/v1/"] == nil {
		t.Fatalf("docker login stored %s, want credentials under https://index.docker.io/v1/", b)
	}
	h.d = startDaemonEnv(t, []string{"DOCKER_CONFIG=" + h.config})
	return h
}

// docker runs the docker CLI with the tutorial's docker config.
func (h *hubTutorial) docker(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+h.config)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// submitWait runs gantry submit ... --wait and returns the job's record
// and what the CLI printed.
func (h *hubTutorial) submitWait(app string, args ...string) (*gantry.Job, string) {
	h.t.Helper()
	out, errOut, _ := h.d.gantry(append(append([]string{"submit", app}, args...), "--wait")...)
	m := regexp.MustCompile(`job (\S+) (succeeded|failed)`).FindStringSubmatch(out + errOut)
	if m == nil {
		h.t.Fatalf("gantry submit %v --wait named no job outcome:\nstdout:\n%s\nstderr:\n%s", args, out, errOut)
	}
	removeJobImage(h.t, m[1])
	return h.d.inspect(m[1]), out + errOut + h.d.mustGantry("logs", m[1])
}

// The tutorial's own flow against Docker Hub (the hub box): docker login
// with no server, gantry submit --push trainer/ml-docker-app --wait (the
// hub rate limits the first manifest PUTs: the push waits as Retry-After
// asks and says so), docker pull and docker run print the accuracy; a
// second job promotes "champion", gantry history lists both under the
// short name, and the provenance record is in the hub.
func TestDockerHubTutorial(t *testing.T) {
	h := startHubTutorial(t)
	app := filepath.Join(t.TempDir(), "ml-docker-app")
	h.d.mustGantry("init", "--base", base, app)
	const repo = hubUser + "/ml-docker-app"

	h.box.rateLimit(2)
	j, out := h.submitWait(app, "--push", repo)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s (%s)\n%s", j.ID, j.State, j.Error, out)
	}
	if got := h.box.limited.Load(); got != 2 {
		t.Errorf("the hub answered %d manifest PUTs with 429, want 2", got)
	}
	if want := "rate limited by index.docker.io (429, Retry-After); retrying in 1s"; strings.Count(out, want) < 2 {
		t.Errorf("the job's output should say twice %q:\n%s", want, out)
	}
	if len(j.Pushes) != 2 || j.Pushes[0].Ref != "index.docker.io/"+repo+":latest" {
		t.Fatalf("pushes %+v, want index.docker.io/%s:latest first", j.Pushes, repo)
	}
	if got := h.served(repo + ":latest"); got != j.Pushes[0].Digest {
		t.Errorf("the hub serves %s for %s, the job recorded %s", got, repo, j.Pushes[0].Digest)
	}
	printed := accuracyLine.FindStringSubmatch(out)
	if printed == nil {
		t.Fatalf("the job printed no accuracy:\n%s", out)
	}

	// docker pull and docker run, the tutorial's last steps.
	h.docker("rmi", repo)
	t.Cleanup(func() { h.docker("rmi", repo) })
	if out, err := h.docker("pull", repo); err != nil {
		t.Fatalf("docker pull %s: %v\n%s", repo, err, out)
	}
	run, err := h.docker("run", "--rm", repo)
	if again := accuracyLine.FindStringSubmatch(run); err != nil || again == nil || again[1] != printed[1] {
		t.Errorf("docker run %s: %v: %q, want accuracy %s", repo, err, run, printed[1])
	}

	// A second job promotes champion; history and provenance under the
	// short name.
	j2, out2 := h.submitWait(app, "--push", repo+":v2", "--promote", "champion")
	if j2.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s (%s)\n%s", j2.ID, j2.State, j2.Error, out2)
	}
	if len(j2.Promotions) != 1 || j2.Promotions[0].Tag != "index.docker.io/"+repo+":champion" || !j2.Promotions[0].Promoted {
		t.Errorf("promotions %+v, want champion promoted", j2.Promotions)
	}
	if got := h.served(repo + ":champion"); got != j2.Pushes[0].Digest {
		t.Errorf("the hub's champion holds %s, want job %s's %s", got, j2.ID, j2.Pushes[0].Digest)
	}
	var hist []gantry.HistoryEntry
	if err := json.Unmarshal([]byte(h.d.mustGantry("history", repo, "--json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Job != j2.ID || !hist[0].Champion || hist[1].Job != j.ID {
		t.Errorf("gantry history %s: %+v, want %s (champion) then %s", repo, hist, j2.ID, j.ID)
	}
	if j2.Provenance == nil {
		t.Errorf("job %s has no provenance record", j2.ID)
	}
	h.provenanceIn(repo, j2.Pushes[0].Digest)
}

// served returns the digest the hub box serves for ref (a Docker Hub
// reference), read with the tutorial user's credentials.
func (h *hubTutorial) served(ref string) string {
	h.t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := remote.Head(r, h.remote(ctx)...)
	if err != nil {
		h.t.Fatalf("HEAD %s on the hub box: %v", ref, err)
	}
	return d.Digest.String()
}

func (h *hubTutorial) remote(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(h.box.client),
		remote.WithAuth(&authn.Basic{Username: hubUser, Password: hubPassword})}
}

// provenanceIn checks that a gantry provenance artifact refers to digest in
// repo on the hub box (through the referrers tag scheme: Docker Hub has no
// referrers API, nor does docker-registry 2.8).
func (h *hubTutorial) provenanceIn(repo, digest string) {
	h.t.Helper()
	d, err := name.NewDigest(repo + "@" + digest)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idx, err := remote.Referrers(d, h.remote(ctx)...)
	if err != nil {
		h.t.Fatalf("referrers of %s: %v", d, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, desc := range m.Manifests {
		if desc.ArtifactType == gantry.ProvenanceType {
			return
		}
	}
	h.t.Errorf("no provenance artifact refers to %s on the hub (referrers %+v)", d, m.Manifests)
}

// A base image in a private repository of the hub builds with the
// credentials of docker login (BuildKit's session auth); a push to another
// user's repository fails naming the repository, the registry and the
// missing push access.
func TestDockerHubPrivateBaseAndDeniedScope(t *testing.T) {
	h := startHubTutorial(t)
	privBase := hubUser + "/python-ml:bookworm"
	if out, err := h.docker("tag", base, privBase); err != nil {
		t.Fatalf("docker tag: %v\n%s", err, out)
	}
	out, err := h.docker("push", privBase)
	// Untagged at once: the build must fetch the base from the hub, not
	// find it in the engine.
	if o, rerr := h.docker("rmi", privBase); rerr != nil {
		t.Fatalf("docker rmi %s: %v\n%s", privBase, rerr, o)
	}
	if err != nil {
		t.Fatalf("docker push %s: %v\n%s", privBase, err, out)
	}
	anon, _ := name.ParseReference(privBase)
	if _, err := remote.Head(anon, remote.WithTransport(h.box.client)); err == nil {
		t.Fatalf("%s is readable without credentials: not a private repository", privBase)
	}

	app := filepath.Join(t.TempDir(), "private-base-app")
	h.d.mustGantry("init", "--base", privBase, app)
	before := h.box.grantCount()
	j, jout := h.submitWait(app, "--push", hubUser+"/ml-docker-app:private-base")
	if j.State != gantry.StateSucceeded {
		t.Fatalf("a build FROM %s: %s (%s)\n%s", privBase, j.State, j.Error, jout)
	}
	// The build asked the hub for a pull token, as the user.
	if want := fmt.Sprintf("%q repository:%s:pull -> [pull]", hubUser, hubUser+"/python-ml"); !slices.Contains(h.box.grantsSince(before), want) {
		t.Errorf("the hub granted no %s during the build: %q", want, h.box.grantsSince(before))
	}
	if accuracyLine.FindStringSubmatch(jout) == nil {
		t.Errorf("the job built on the private base printed no accuracy:\n%s", jout)
	}

	denied, dout := h.submitWait(app, "--push", "otheruser/repo")
	if denied.State != gantry.StateFailed {
		t.Fatalf("push to otheruser/repo: %s, want failed\n%s", denied.State, dout)
	}
	for _, want := range []string{"otheruser/repo", "index.docker.io", "lack push access", "docker login"} {
		if !strings.Contains(denied.Error, want) {
			t.Errorf("the job's error %q does not say %q", denied.Error, want)
		}
	}
}
