package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// retainTrainer prints the accuracy its ACC build argument gives, and
// leaves two outputs: one of its own (the accuracy) and one every job
// leaves the same.
func retainTrainer(t *testing.T) string {
	return trainerDir(t, `import os
os.makedirs('/output', exist_ok=True)
open('/output/own.txt', 'w').write(os.environ['ACC'])
open('/output/shared.txt', 'w').write('the same for every job')
print('Model accuracy:', os.environ['ACC'], flush=True)
`, "ARG ACC", "ENV ACC=${ACC}")
}

// engineHas reports whether the engine has the image ref.
func engineHas(t *testing.T, ref string) bool {
	t.Helper()
	return exec.Command("docker", "image", "inspect", ref).Run() == nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// outputBlobs are the paths of the kept files job j's outputs name, by
// output path, and of its output layer.
func outputBlobs(dataDir string, j *gantry.Job) map[string]string {
	out := map[string]string{}
	if j.Outputs == nil {
		return out
	}
	for _, f := range j.Outputs.Files {
		out[f.Path] = filepath.Join(dataDir, "outputs", "sha256", strings.TrimPrefix(f.Digest, "sha256:"))
	}
	if l := j.Outputs.Layer; l != nil {
		out["layer"] = filepath.Join(dataDir, "outputs", "layers", "sha256", strings.TrimPrefix(l.Digest, "sha256:"))
	}
	return out
}

// prune runs gantry prune with args and --json, and reads the report.
func (d *gantryd) prune(args ...string) gantry.PruneReport {
	d.t.Helper()
	var rep gantry.PruneReport
	out := d.mustGantry(append([]string{"prune", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		d.t.Fatalf("gantry prune %v printed %q: %v", args, out, err)
	}
	return rep
}

func prunedIDs(rep gantry.PruneReport) []string {
	var ids []string
	for _, j := range rep.Jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

// Three jobs of one image name, the first promoted: gantry prune --keep 1
// removes the middle one alone (its record, log, own outputs, output layer
// and engine image), keeps the champion and the newest, and the output all
// three share; --dry-run before lists the same and changes nothing. A
// running job is never pruned, even with --keep 0 --older-than 0.
func TestPruneRemovesWhatAJobLeft(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--retain", "off")
	dir := retainTrainer(t)
	repo := uniqueRepo(t)
	var jobs []*gantry.Job
	for i, acc := range []string{"0.95", "0.90", "0.91"} {
		id := d.submit(dir, "--build-arg", "ACC="+acc, "--push", repo+":run-"+acc, "--promote", "champion")
		j := d.waitJob(id, 5*time.Minute)
		if j.State != gantry.StateSucceeded || len(j.Promotions) != 1 || j.Promotions[0].Promoted != (i == 0) {
			t.Fatalf("job %d (%s): %s (%s), promotions %+v", i, acc, j.State, j.Error, j.Promotions)
		}
		jobs = append(jobs, j)
	}
	champion, middle, newest := jobs[0], jobs[1], jobs[2]
	blobs := outputBlobs(d.dataDir, middle)
	if len(blobs) != 3 {
		t.Fatalf("the middle job kept outputs %v: want own.txt, shared.txt and a layer", blobs)
	}
	log := filepath.Join(d.dataDir, "logs", middle.ID+".log")
	unchanged := func(when string) {
		t.Helper()
		for _, j := range jobs {
			d.inspect(j.ID)
			if !engineHas(t, j.ImageName) {
				t.Errorf("%s: image %s is gone", when, j.ImageName)
			}
		}
		for what, p := range blobs {
			if !fileExists(p) {
				t.Errorf("%s: the middle job's %s (%s) is gone", when, what, p)
			}
		}
		if !fileExists(log) {
			t.Errorf("%s: %s is gone", when, log)
		}
	}
	unchanged("before")

	dry := d.prune("--dry-run", "--keep", "1", "--older-than", "0")
	if ids := prunedIDs(dry); !dry.DryRun || len(ids) != 1 || ids[0] != middle.ID {
		t.Errorf("dry run lists jobs %v, want only the middle one %s", ids, middle.ID)
	}
	unchanged("after a dry run")

	rep := d.prune("--keep", "1", "--older-than", "0")
	if ids := prunedIDs(rep); len(ids) != 1 || ids[0] != middle.ID {
		t.Fatalf("prune removed jobs %v, want only the middle one %s", ids, middle.ID)
	}
	if len(rep.Images) != 1 || rep.Images[0].Ref != middle.ImageName || rep.Bytes <= 0 {
		t.Errorf("prune removed images %+v (%d bytes), want %s", rep.Images, rep.Bytes, middle.ImageName)
	}
	if _, errOut, code := d.gantry("inspect", middle.ID); code == 0 || !strings.Contains(errOut, "no such job") {
		t.Errorf("gantry inspect of the pruned job: exit %d, %q; want not found", code, errOut)
	}
	if ls := d.mustGantry("ls"); strings.Contains(ls, middle.ID) || !strings.Contains(ls, champion.ID) || !strings.Contains(ls, newest.ID) {
		t.Errorf("gantry ls after prune:\n%s\nwant %s and %s, not %s", ls, champion.ID, newest.ID, middle.ID)
	}
	if engineHas(t, middle.ImageName) || !engineHas(t, champion.ImageName) || !engineHas(t, newest.ImageName) {
		t.Errorf("engine images after prune: want %s gone, %s and %s kept", middle.ImageName, champion.ImageName, newest.ImageName)
	}
	for what, want := range map[string]bool{"own.txt": false, "layer": false, "shared.txt": true} {
		if got := fileExists(blobs[what]); got != want {
			t.Errorf("the middle job's %s exists: %v, want %v", what, got, want)
		}
	}
	if fileExists(log) || !fileExists(filepath.Join(d.dataDir, "logs", newest.ID+".log")) {
		t.Errorf("logs after prune: want %s gone, the newest job's kept", log)
	}

	// A running job stays, with its image, whatever the bounds.
	sleeper := trainerDir(t, "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
	running := d.submit(sleeper)
	deadline := time.Now().Add(5 * time.Minute)
	for d.inspect(running).State != gantry.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not start running", running)
		}
		time.Sleep(200 * time.Millisecond)
	}
	rep = d.prune("--keep", "0", "--older-than", "0")
	for _, id := range prunedIDs(rep) {
		if id == running || id == champion.ID {
			t.Errorf("prune --keep 0 removed job %s (running %s, champion %s)", id, running, champion.ID)
		}
	}
	if j := d.inspect(running); j.State != gantry.StateRunning || !engineHas(t, j.ImageName) {
		t.Errorf("the running job after prune: %s, image kept %v", j.State, engineHas(t, j.ImageName))
	}
	d.mustGantry("cancel", running)
	d.waitJob(running, 2*time.Minute)
}
