package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

var accuracyLine = regexp.MustCompile(`(?m)^Model accuracy: ([0-9.]+)$`)

// The Iris trainer end to end, as the README runs it: the job succeeds, the
// accuracy recorded is the one the container printed, the digest recorded is
// the one the registry serves, and the engine can pull the tag back and run it
// to print the same accuracy.
func TestIrisEndToEnd(t *testing.T) {
	d := startDaemon(t)
	app := filepath.Join(t.TempDir(), "ml-docker-app")
	d.mustGantry("init", "--base", base, app)
	ref := uniqueRef(t)

	out, errOut, code := d.gantry("submit", app, "--push", ref, "--min-accuracy", "0.9", "--wait")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	m := regexp.MustCompile(`job (\S+) succeeded: accuracy ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit --wait did not end with the outcome and accuracy:\n%s", out)
	}
	id := m[1]
	removeJobImage(t, id)
	if !strings.Contains(errOut, "[5/5] COPY app.py") || !strings.Contains(errOut, "Model accuracy:") {
		t.Errorf("submit --wait showed no build or training progress:\n%s", errOut)
	}

	j := d.inspect(id)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("state %s (%s), want succeeded", j.State, j.Error)
	}
	logs := d.mustGantry("logs", id)
	printed := accuracyLine.FindAllStringSubmatch(logs, -1)
	if len(printed) != 1 {
		t.Fatalf("the log holds %d accuracy lines, want 1:\n%s", len(printed), logs)
	}
	want, _ := strconv.ParseFloat(printed[0][1], 64)
	if j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != want {
		t.Errorf("recorded accuracy %v, the container printed %v", j.Metrics.Accuracy, want)
	}
	if j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("exit code %v, want 0", j.ExitCode)
	}
	if !strings.HasPrefix(j.Image, "sha256:") {
		t.Errorf("image %q is not a local image ID", j.Image)
	}
	for _, p := range []gantry.Phase{j.Times.Build, j.Times.Run, j.Times.Push} {
		if p.Started == nil || p.Finished == nil {
			t.Errorf("phase times incomplete: %+v", j.Times)
		}
	}
	// The reference asked for, then the job's immutable tag.
	jobTag := repoOf(ref) + ":job-" + id
	if len(j.Pushes) != 2 || j.Pushes[0].Ref != ref || j.Pushes[1].Ref != jobTag {
		t.Fatalf("pushes %+v, want %s and %s", j.Pushes, ref, jobTag)
	}
	if served := servedDigest(t, jobTag); served != j.Pushes[0].Digest {
		t.Errorf("%s serves %s, want the image's %s", jobTag, served, j.Pushes[0].Digest)
	}
	if served := servedDigest(t, ref); j.Pushes[0].Digest != served {
		t.Errorf("recorded digest %s, registry serves %s", j.Pushes[0].Digest, served)
	}
	if !strings.Contains(out, "pushed "+ref+"@"+j.Pushes[0].Digest) {
		t.Errorf("submit --wait did not print the pushed digest:\n%s", out)
	}
	if c := leftoverContainers(t, id); c != "" {
		t.Errorf("containers of job %s left behind: %s", id, c)
	}
	// The image read for the push (a docker save file of ~1 GB) is gone.
	if left, _ := os.ReadDir(filepath.Join(d.dataDir, "tmp")); len(left) != 0 {
		t.Errorf("the push left files in gantryd's tmp: %v", left)
	}

	// The engine pulls the pushed tag back and runs it.
	exec.Command("docker", "rmi", ref).Run()
	if out, err := exec.Command("docker", "pull", ref).CombinedOutput(); err != nil {
		t.Fatalf("docker pull %s: %v\n%s", ref, err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
	run, err := exec.Command("docker", "run", "--rm", ref).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run %s: %v\n%s", ref, err, run)
	}
	again := accuracyLine.FindStringSubmatch(string(run))
	if again == nil || again[1] != printed[0][1] {
		t.Errorf("the pulled image printed %q, want accuracy %s", run, printed[0][1])
	}

	// ls shows it like docker ps.
	ls := d.mustGantry("ls")
	if !regexp.MustCompile(id + `\s+succeeded\s+` + regexp.QuoteMeta(printed[0][1])).MatchString(ls) {
		t.Errorf("gantry ls does not show the job as succeeded with its accuracy:\n%s", ls)
	}
}

// A trainer that exits non-zero: failed, nothing pushed, the log kept.
func TestTrainerExitsNonZero(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "import sys\nprint('loading data')\nprint('Model accuracy: 0.99')\nprint('disk full', file=sys.stderr)\nsys.exit(3)\n")
	ref := uniqueRef(t)
	out, errOut, code := d.gantry("submit", dir, "--push", ref, "--wait")
	if code != 1 {
		t.Errorf("submit --wait exit code %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	id := jobIDFrom(t, out)
	removeJobImage(t, id)
	j := d.inspect(id)
	if j.State != gantry.StateFailed || !strings.Contains(j.Error, "code 3") {
		t.Errorf("state %s, error %q; want failed naming exit code 3", j.State, j.Error)
	}
	if j.ExitCode == nil || *j.ExitCode != 3 {
		t.Errorf("exit code %v, want 3", j.ExitCode)
	}
	if len(j.Pushes) != 0 || servedDigest(t, ref) != "" {
		t.Errorf("a failed job was pushed: %+v", j.Pushes)
	}
	logs := d.mustGantry("logs", id)
	for _, line := range []string{"loading data", "disk full"} {
		if !strings.Contains(logs, line) {
			t.Errorf("log lacks %q (stdout and stderr both belong in it):\n%s", line, logs)
		}
	}
	if c := leftoverContainers(t, id); c != "" {
		t.Errorf("containers of job %s left behind: %s", id, c)
	}
}

// An accuracy below --min-accuracy: rejected, nothing pushed.
func TestBelowTheGateIsRejected(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "print('Model accuracy: 0.5000')\n")
	ref := uniqueRef(t)
	out, errOut, code := d.gantry("submit", dir, "--push", ref, "--min-accuracy", "0.9", "--wait")
	if code != 3 {
		t.Errorf("submit --wait exit code %d, want 3 (rejected)\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	id := jobIDFrom(t, out)
	removeJobImage(t, id)
	j := d.inspect(id)
	if j.State != gantry.StateRejected {
		t.Fatalf("state %s (%s), want rejected", j.State, j.Error)
	}
	if j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 0.5 {
		t.Errorf("accuracy %v, want 0.5", j.Metrics.Accuracy)
	}
	if !strings.Contains(j.Error, "0.5000") || !strings.Contains(j.Error, "0.9") {
		t.Errorf("error %q should name the accuracy and the gate", j.Error)
	}
	if len(j.Pushes) != 0 || servedDigest(t, ref) != "" {
		t.Errorf("a rejected job was pushed: %+v", j.Pushes)
	}
}

// A Dockerfile with a failing step: failed, with BuildKit's own message
// naming the step.
func TestFailingBuildStep(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "print('never runs')\n", `RUN echo "fetching weights" && echo "weights server unreachable" >&2 && exit 7`)
	out, _, code := d.gantry("submit", dir, "--wait", "-q")
	if code != 1 {
		t.Errorf("submit --wait exit code %d, want 1", code)
	}
	id := jobIDFrom(t, out)
	removeJobImage(t, id)
	j := d.inspect(id)
	if j.State != gantry.StateFailed {
		t.Fatalf("state %s, want failed", j.State)
	}
	for _, want := range []string{"[2/3] RUN", "exit code: 7"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("error %q lacks %q", j.Error, want)
		}
	}
	if j.ContainerID != "" || j.Times.Run.Started != nil {
		t.Errorf("a job whose build failed went on to run: %+v", j)
	}
	if logs := d.mustGantry("logs", id); !strings.Contains(logs, "weights server unreachable") {
		t.Errorf("the log lacks the failing step's output:\n%s", logs)
	}
}

// Two jobs submitted at once with --max-jobs 1 both finish, one after the
// other, in submission order.
func TestMaxJobsOneRunsJobsInTurn(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "1")
	dir := trainerDir(t, "import time\nprint('start', flush=True)\ntime.sleep(2)\nprint('accuracy: 0.95')\n")
	first := d.submit(dir)
	second := d.submit(dir)
	a := d.waitJob(first, 5*time.Minute)
	b := d.waitJob(second, 5*time.Minute)
	for _, j := range []*gantry.Job{a, b} {
		if j.State != gantry.StateSucceeded {
			t.Fatalf("job %s: %s (%s), want succeeded", j.ID, j.State, j.Error)
		}
	}
	if b.Times.Build.Started.Before(*a.Times.Finished) {
		t.Errorf("the second job started building at %v, before the first finished at %v", b.Times.Build.Started, a.Times.Finished)
	}
}

// gantryd stopped and started again: every record is still there, and ls
// shows the same.
func TestRestartKeepsEveryRecord(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	ok := trainerDir(t, "print('accuracy=0.97')\n")
	bad := trainerDir(t, "import sys\nsys.exit(1)\n")
	ids := []string{d.submit(ok), d.submit(bad), d.submit(ok, "--min-accuracy", "0.99")}
	before := map[string]*gantry.Job{}
	for _, id := range ids {
		before[id] = d.waitJob(id, 5*time.Minute)
	}
	lsBefore := d.mustGantry("ls", "--json")

	d.stop()
	d.start()

	var jobs []*gantry.Job
	if err := json.Unmarshal([]byte(d.mustGantry("ls", "--json")), &jobs); err != nil {
		t.Fatal(err)
	}
	if len(jobs) != len(ids) {
		t.Fatalf("after restart ls shows %d jobs, want %d", len(jobs), len(ids))
	}
	if lsAfter := d.mustGantry("ls", "--json"); lsAfter != lsBefore {
		t.Errorf("ls --json differs after restart:\nbefore:\n%s\nafter:\n%s", lsBefore, lsAfter)
	}
	want := map[string]gantry.State{ids[0]: gantry.StateSucceeded, ids[1]: gantry.StateFailed, ids[2]: gantry.StateRejected}
	for _, id := range ids {
		j := d.inspect(id)
		if j.State != want[id] {
			t.Errorf("job %s: %s after restart, want %s", id, j.State, want[id])
		}
		b, _ := json.Marshal(before[id])
		a, _ := json.Marshal(j)
		if string(a) != string(b) {
			t.Errorf("job %s changed across the restart:\nbefore %s\nafter  %s", id, b, a)
		}
	}
}

// jobIDFrom reads the job ID from submit --wait's outcome line.
func jobIDFrom(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^job (\S+) `).FindStringSubmatch(out)
	if m == nil || !gantry.ValidID(m[1]) {
		t.Fatalf("no job ID in submit's output:\n%s", out)
	}
	return m[1]
}
