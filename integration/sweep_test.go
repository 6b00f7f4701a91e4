package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// sweepTrainer reports accuracy A*0.1 + B*0.01 from its parameters.
const sweepTrainer = `import os
a, b = float(os.environ["A"]), float(os.environ["B"])
print("Model accuracy: %.4f" % (a * 0.1 + b * 0.01), flush=True)
`

// The grid: 3x2, the best point A=3 B=7 (accuracy 0.37), listed out of
// order so that grid order is not rank order.
var sweepParams = []string{"--param", "A=1,3,2", "--param", "B=5,7"}

// sweepView is gantry sweep show --json.
func sweepView(t *testing.T, d *gantryd, id string) *gantry.SweepView {
	t.Helper()
	var v gantry.SweepView
	if err := json.Unmarshal([]byte(d.mustGantry("sweep", "show", id, "--json")), &v); err != nil {
		t.Fatalf("gantry sweep show %s --json: %v", id, err)
	}
	return &v
}

// removeSweepImage removes sweep id's one image when the test ends.
func removeSweepImage(t *testing.T, id string) {
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", "gantry/sweep:"+id).Run() })
}

// buildkitRuns returns how many builds used the step "RUN echo NONCE >
// /nonce", by BuildKit's own record (docker system df -v): the step's cache
// record counts each build that ran it or took it from the cache, so two
// builds of one context count 2 even when the second made no new image.
// (Docker 20.10 logs no image event for a BuildKit export, and distinct
// image IDs would not tell a cached rebuild from none.)
func buildkitRuns(t *testing.T, nonce string) int {
	t.Helper()
	out, err := exec.Command("docker", "system", "df", "-v", "--format", "{{json .BuildCache}}").Output()
	if err != nil {
		t.Fatalf("docker system df -v: %v", err)
	}
	var records []struct{ Description, UsageCount string }
	if err := json.Unmarshal(out, &records); err != nil {
		t.Fatalf("docker system df -v: %v: %s", err, out)
	}
	n := 0
	for _, r := range records {
		if strings.Contains(r.Description, "echo "+nonce+" > /nonce") {
			c, _ := strconv.Atoi(r.UsageCount)
			n += c
		}
	}
	return n
}

// checkSweep checks what a user would of a sweep of sweepTrainer that
// pushed to ref: six points of one image, the leaderboard in the order of
// the accuracies the trainers printed, the winner A=3 B=7, and the registry
// holding the winner alone.
func checkSweep(t *testing.T, d *gantryd, v *gantry.SweepView, ref string) {
	t.Helper()
	sw := v.Sweep
	if sw.State != gantry.StateSucceeded || len(sw.Jobs) != 6 || len(v.Points) != 6 {
		t.Fatalf("sweep: %s (%s), %d jobs; want succeeded, 6", sw.State, sw.Error, len(sw.Jobs))
	}
	images := map[string]bool{}
	var last float64 = 1
	for i, p := range v.Points {
		j := d.inspect(p.Job)
		images[j.Image] = true
		// The accuracy the container printed, read from its log.
		a, _ := strconv.ParseFloat(p.Params["A"], 64)
		b, _ := strconv.ParseFloat(p.Params["B"], 64)
		printed := fmt.Sprintf("Model accuracy: %.4f", a*0.1+b*0.01)
		if !strings.Contains(d.mustGantry("logs", p.Job), printed) {
			t.Errorf("point %s (A=%v B=%v): its log lacks %q", p.Job, a, b, printed)
		}
		acc := *j.Metrics.Accuracy
		if acc > last {
			t.Errorf("leaderboard rank %d: accuracy %.4f above the rank before's %.4f", i+1, acc, last)
		}
		last = acc
		if p.Job != sw.Winner && servedDigest(t, gantry.Repository(ref)+":job-"+p.Job) != "" {
			t.Errorf("point %s, not the winner, has a job tag in the registry", p.Job)
		}
	}
	if len(images) != 1 {
		t.Errorf("the points ran %d images, want 1: %v", len(images), images)
	}
	win := v.Points[0]
	if sw.Winner != win.Job || win.Params["A"] != "3" || win.Params["B"] != "7" {
		t.Fatalf("winner %s, leaderboard's first %s %v; want the point A=3 B=7", sw.Winner, win.Job, win.Params)
	}
	j := d.inspect(sw.Winner)
	digest := servedDigest(t, ref)
	if digest == "" || len(j.Pushes) == 0 || j.Pushes[0].Digest != digest || servedDigest(t, gantry.Repository(ref)+":job-"+j.ID) != digest {
		t.Errorf("registry: %s holds %q, the winner's pushes %v", ref, digest, j.Pushes)
	}
}

func TestSweepBuildsOnceShipsTheBest(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "3")
	n := nonce()
	dir := trainerDir(t, sweepTrainer, "RUN echo "+n+" > /nonce")
	ref := uniqueRef(t)
	args := append([]string{"sweep", dir, "--push", ref, "--wait"}, sweepParams...)
	out, errOut, code := d.gantry(args...)
	id, _, _ := strings.Cut(strings.TrimPrefix(errOut, "sweep "), " ")
	removeSweepImage(t, id)
	if code != 0 {
		t.Fatalf("gantry sweep --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	v := sweepView(t, d, id)
	checkSweep(t, d, v, ref)
	if runs := buildkitRuns(t, n); runs != 1 {
		t.Errorf("BuildKit ran the sweep's build %d times, want 1", runs)
	}
	// The printed leaderboard: the winner first, marked.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[0], "sweep "+id+" succeeded: winner "+v.Sweep.Winner) ||
		!strings.HasPrefix(strings.TrimSpace(lines[2]), "*") || !strings.Contains(lines[2], v.Sweep.Winner) {
		t.Errorf("leaderboard:\n%s", out)
	}
}

func TestSweepSurvivesKill9(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "2")
	n := nonce()
	dir := trainerDir(t, "import os\n"+strings.ReplaceAll(heldTail, `os.environ.get("ACC") or "0.95"`,
		`"%.4f" % (float(os.environ["A"]) * 0.1 + float(os.environ["B"]) * 0.01)`), "RUN echo "+n+" > /nonce")
	ref := uniqueRef(t)
	id := strings.TrimSpace(d.mustGantry(append([]string{"sweep", dir, "--push", ref}, sweepParams...)...))
	removeSweepImage(t, id)
	jobs := sweepView(t, d, id).Sweep.Jobs
	awaitHeld(t, d, jobs[0])
	release(t, jobs[0])
	awaitHeld(t, d, jobs[1])
	d.kill9() // one point ended, one held, four queued
	d.start()
	for _, j := range jobs[1:] {
		awaitHeld(t, d, j)
		release(t, j)
	}
	deadline := time.Now().Add(3 * time.Minute)
	v := sweepView(t, d, id)
	for !v.Sweep.State.Terminal() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		v = sweepView(t, d, id)
	}
	checkSweep(t, d, v, ref)
	if runs := buildkitRuns(t, n); runs != 1 {
		t.Errorf("BuildKit ran the sweep's build %d times, want 1", runs)
	}
}
