package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// gantryd's own image, built as `make image` builds it, runs the Iris job
// for the gantry CLI on the host, through the socket it shares, and pushes
// the image read from the engine's layer store it mounts read-only.
func TestGantrydImage(t *testing.T) {
	t.Parallel()
	image := "gantry-it/gantryd:" + nonce()
	build := exec.Command("make", "-C", "..", "image", "IMAGE="+image, "IMAGE_DIR="+filepath.Join(t.TempDir(), "image"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	sockDir := t.TempDir()
	dataDir := t.TempDir()
	name := "gantry-it-gantryd-" + nonce()
	run := exec.Command("docker", "run", "-d", "--name", name, "--network", "host",
		"-v", "/var/run/docker.sock:/var/run/docker.sock",
		"-v", "/var/lib/docker:/var/lib/docker:ro",
		"-v", sockDir+":/run/gantry",
		"-v", dataDir+":/var/lib/gantry",
		image)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	logs := func() string {
		out, _ := exec.Command("docker", "logs", name).CombinedOutput()
		return string(out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gantryd's log in its container:\n%s", logs())
		}
		exec.Command("docker", "rm", "-f", name).Run()
	})

	d := &gantryd{t: t, socket: filepath.Join(sockDir, "gantry.sock"), dataDir: dataDir}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, _, code := d.gantry("version"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gantryd in its container did not answer on %s within a minute", d.socket)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(logs(), "read from the engine's layer store") {
		t.Errorf("gantryd in its container does not read layers from the mounted layer store")
	}

	app := filepath.Join(t.TempDir(), "ml-docker-app")
	d.mustGantry("init", "--base", base, app)
	ref := uniqueRef(t)
	out, errOut, code := d.gantry("submit", app, "--push", ref, "--min-accuracy", "0.9", "--wait", "-q")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	m := regexp.MustCompile(`job (\S+) succeeded`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit --wait did not say the job succeeded:\n%s", out)
	}
	removeJobImage(t, m[1])
	j := d.inspect(m[1])
	if j.State != gantry.StateSucceeded || len(j.Pushes) == 0 {
		t.Fatalf("job %s: %s (%s), pushes %v", j.ID, j.State, j.Error, j.Pushes)
	}
	if l := logs(); !strings.Contains(l, "via=store") || strings.Contains(l, "via=save") {
		t.Errorf("gantryd in its container did not read every layer from the layer store")
	}
	if served := servedDigest(t, ref); served != j.Pushes[0].Digest {
		t.Errorf("%s serves %s, the record says %s", ref, served, j.Pushes[0].Digest)
	}
	// Its records are in the mounted data dir.
	if _, err := os.Stat(filepath.Join(dataDir, "gantry.db")); err != nil {
		t.Errorf("no job records in the mounted data dir: %v", err)
	}
}
