package integration

// The swarm backend on a real 3-node Docker Swarm (internal/lab: a dockerd
// per network namespace, a registry on the lab's bridge) and a real
// standalone buildkitd built from the Go module proxy: gantryd builds on
// buildkitd, stages the image by digest, and trains on the node the swarm's
// scheduler picks.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/lab"
)

// The lab's nodes: 0 is the manager, 1 advertises two GPUs, 2 is labelled
// pool=train.
const (
	gpuNode   = 1
	trainNode = 2
)

var (
	labOnce  sync.Once
	labSwarm *lab.Swarm
	labBK    *lab.BuildKit
	labErr   error
)

// swarmLab starts the lab (once for the package's tests; TestMain closes
// it) and returns it with its buildkitd.
func swarmLab(t *testing.T) (*lab.Swarm, *lab.BuildKit) {
	t.Helper()
	labOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		labSwarm, labErr = lab.StartSwarm(ctx, lab.SwarmOptions{
			Nodes: 3, GPUNode: gpuNode,
			Labels:    map[int]map[string]string{trainNode: {"pool": "train"}},
			Images:    []string{base},
			Heartbeat: time.Second, // a node cut off is down in seconds
			Log:       os.Stderr,
		})
		if labErr != nil {
			return
		}
		labClosers = append(labClosers, labSwarm.Close)
		labBK, labErr = lab.StartBuildKit(ctx, lab.BuildKitOptions{InsecureRegistries: []string{labSwarm.Registry}})
		if labErr == nil {
			labClosers = append(labClosers, labBK.Close)
		}
	})
	if labErr != nil {
		t.Fatalf("the swarm lab: %v", labErr)
	}
	return labSwarm, labBK
}

// startSwarmDaemon starts gantryd with the swarm backend against the lab's
// manager, building on the lab's buildkitd.
func startSwarmDaemon(t *testing.T, args ...string) (*gantryd, *lab.Swarm) {
	t.Helper()
	sw, bk := swarmLab(t)
	reg := sw.Registry
	d := startDaemon(t, append([]string{
		"--backend", "swarm", "--docker-host", sw.Manager().Host,
		"--staging-repo", reg + "/gantry/staging",
		"--buildkit-addr", bk.Addr, "--buildkit-tls-ca", bk.CACert, "--buildkit-tls-cert", bk.Cert, "--buildkit-tls-key", bk.Key,
		"--build-cache", reg + "/gantry/cache",
		"--insecure-registry", reg,
		"--allow-gpus", "--max-jobs", "4", "--stop-timeout", "2s",
	}, args...)...)
	return d, sw
}

// swarmTrainer is a training context on the lab registry's base image.
func swarmTrainer(t *testing.T, sw *lab.Swarm, program string) string {
	t.Helper()
	dir := t.TempDir()
	df := "FROM " + sw.Image(base) + "\nCOPY train.py /train.py\nCMD [\"python3\", \"-u\", \"/train.py\"]\n"
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644)
	os.WriteFile(filepath.Join(dir, "train.py"), []byte(program), 0o644)
	return dir
}

// swarmHeldTrainer prints numbered lines, says it is held, waits for the test to
// release it (a file the test makes in its container), then prints more and
// its accuracy.
const swarmHeldTrainer = `import os, time
for i in range(1, 51):
    print("line %d" % i)
print("held until released", flush=True)
while not os.path.exists("/tmp/gantry-it-release"):
    time.sleep(0.05)
for i in range(51, 101):
    print("line %d" % i)
print("Model accuracy: 0.9500")
`

// nodeIndex is the lab index of the swarm node id.
func nodeIndex(t *testing.T, sw *lab.Swarm, id string) int {
	t.Helper()
	for i, n := range sw.Nodes {
		if n.ID == id {
			return i
		}
	}
	t.Fatalf("node %q is not one of the lab's", id)
	return -1
}

// releaseOnNode releases job id's held trainer, which runs on lab node i:
// docker exec through that node's engine.
func releaseOnNode(t *testing.T, sw *lab.Swarm, i int, id string) {
	t.Helper()
	host := sw.Nodes[i].Host
	out, err := exec.Command("docker", "-H", host, "ps", "-q", "--filter", "label=io.gantry.job="+id).Output()
	cid := strings.TrimSpace(string(out))
	if err != nil || cid == "" || strings.Contains(cid, "\n") {
		t.Fatalf("job %s's container on node %d: %q, %v", id, i, out, err)
	}
	if out, err := exec.Command("docker", "-H", host, "exec", cid, "touch", "/tmp/gantry-it-release").CombinedOutput(); err != nil {
		t.Fatalf("release job %s on node %d: %v: %s", id, i, err, out)
	}
}

// awaitPlacement polls job id's record until ok holds of it: the swarm's
// scheduler has no event gantry could wait on, so neither has its record.
func awaitPlacement(t *testing.T, d *gantryd, id string, what string, ok func(*gantry.Job) bool) *gantry.Job {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		j := d.inspect(id)
		if ok(j) {
			return j
		}
		if j.State.Terminal() || time.Now().After(deadline) {
			t.Fatalf("job %s: %s did not happen (state %s, error %q, placement %+v)", id, what, j.State, j.Error, j.Placement)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// swarmServices lists the lab's services that carry job id's label.
func swarmServices(t *testing.T, sw *lab.Swarm, id string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := sw.Client(0).ServiceList(ctx, client.ServiceListOptions{Filters: client.Filters{}.Add("label", "io.gantry.job="+id)})
	if err != nil {
		t.Fatalf("list services: %v", err)
	}
	var names []string
	for _, s := range res.Items {
		names = append(names, s.Spec.Name)
	}
	return names
}

// The Iris job, built on buildkitd, staged by digest, trained on the worker
// a constraint picks, pushed with its model; the pushed image runs on
// another node and finds the model. gantry nodes shows the cluster.
func TestSwarmIris(t *testing.T) {
	d, sw := startSwarmDaemon(t)
	app := filepath.Join(t.TempDir(), "ml-docker-app")
	d.mustGantry("init", "--base", sw.Image(base), app)
	ref := sw.Registry + "/gantry-it/iris:" + strings.ToLower(t.Name())
	out, errOut, code := d.gantry("submit", app, "--push", ref, "--min-accuracy", "0.9",
		"--constraint", "node.labels.pool==train", "--wait")
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	m := regexp.MustCompile(`job (\S+) succeeded`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no outcome:\n%s", out)
	}
	j := d.inspect(m[1])
	if p := j.Placement; p == nil || p.Backend != gantry.BackendSwarm || p.NodeID != sw.Nodes[trainNode].ID || p.Service == "" {
		t.Errorf("placement %+v, want the swarm node %s that the constraint picks", p, sw.Nodes[trainNode].ID)
	}
	stage := sw.Registry + "/gantry/staging@"
	if !strings.HasPrefix(j.Image, stage) {
		t.Fatalf("image %q, want the staging repository's digest reference %s...", j.Image, stage)
	}
	if got := servedDigest(t, j.Image); "@"+got != j.Image[strings.Index(j.Image, "@"):] {
		t.Errorf("the staging registry serves %s for %s: the recorded digest is not BuildKit's push", got, j.Image)
	}
	if j.Outputs == nil || len(j.Outputs.Files) == 0 || j.Outputs.Files[0].Path != "model.joblib" {
		t.Fatalf("outputs %+v, want model.joblib collected from the node", j.Outputs)
	}
	if len(j.Pushes) == 0 || j.Pushes[0].Ref != ref || servedDigest(t, ref) != j.Pushes[0].Digest {
		t.Fatalf("pushes %+v: not what the registry serves for %s", j.Pushes, ref)
	}
	// The shipped model, on another node: the image finds it and scores it.
	run := exec.Command("docker", "-H", sw.Nodes[gpuNode].Host, "run", "--rm", "--network", "none", ref, "--evaluate")
	if out, err := run.CombinedOutput(); err != nil || !accuracyLine.Match(out) {
		t.Errorf("docker run %s --evaluate on node %d: %v\n%s", ref, gpuNode, err, out)
	}
	var nodes gantry.Cluster
	if err := json.Unmarshal([]byte(d.mustGantry("nodes", "--json")), &nodes); err != nil || nodes.Backend != gantry.BackendSwarm || len(nodes.Nodes) != 3 {
		t.Errorf("gantry nodes --json: %+v, %v; want the 3 swarm nodes", nodes, err)
	}
	for _, n := range nodes.Nodes {
		if n.ID == sw.Nodes[gpuNode].ID && n.Generic["gpu"] != 2 {
			t.Errorf("node %s's generic resources %v, want gpu=2", n.ID, n.Generic)
		}
	}
	if left := swarmServices(t, sw, j.ID); len(left) > 0 {
		t.Errorf("services left after the job: %v", left)
	}
}

// A job that asks for a GPU lands on the node that advertises them; one that
// asks for more than any node has waits, with the scheduler's reason in its
// record, until it is canceled.
func TestSwarmGPUs(t *testing.T) {
	d, sw := startSwarmDaemon(t)
	dir := swarmTrainer(t, sw, "import os\nprint('gpu', os.environ.get('DOCKER_RESOURCE_GPU'))\nprint('Model accuracy: 0.9')\n")
	one := d.submit(dir, "--gpus", "1")
	j := d.waitJob(one, 10*time.Minute)
	if j.State != gantry.StateSucceeded || j.Placement == nil || j.Placement.NodeID != sw.Nodes[gpuNode].ID {
		t.Fatalf("--gpus 1: %s (%q) on %+v, want succeeded on the GPU node %s", j.State, j.Error, j.Placement, sw.Nodes[gpuNode].ID)
	}
	if log := d.mustGantry("logs", one); !regexp.MustCompile(`gpu \S+`).MatchString(log) || strings.Contains(log, "gpu None") {
		t.Errorf("the training saw no GPU assigned:\n%s", log)
	}
	many := d.submit(dir, "--gpus", "5")
	j = awaitPlacement(t, d, many, "waiting for a node", func(j *gantry.Job) bool {
		return j.Placement != nil && strings.Contains(j.Placement.Waiting, "insufficient resources")
	})
	t.Logf("--gpus 5 waits: %s", j.Placement.Waiting)
	d.mustGantry("cancel", many)
	if j = d.waitJob(many, 5*time.Minute); j.State != gantry.StateCanceled {
		t.Errorf("canceled job ended %s (%q)", j.State, j.Error)
	}
	if left := swarmServices(t, sw, many); len(left) > 0 {
		t.Errorf("services left after the cancel: %v", left)
	}
}

// A program's own failures on a swarm: its exit code, out of memory, a
// training timeout and a cancel, each stopping and removing its service.
func TestSwarmFailures(t *testing.T) {
	d, sw := startSwarmDaemon(t)
	for _, tc := range []struct {
		name, program string
		args          []string
		cancel        bool
		want          gantry.State
		wantErr       string
	}{
		{name: "exit code", program: "print('bad data')\nraise SystemExit(3)\n", want: gantry.StateFailed, wantErr: "exited with code 3"},
		{name: "out of memory", program: "b = bytearray(512 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n",
			args: []string{"--memory", "64m"}, want: gantry.StateFailed, wantErr: "probably out of memory"},
		{name: "timeout", program: swarmHeldTrainer, args: []string{"--train-timeout", "20s"}, want: gantry.StateFailed, wantErr: "training timed out"},
		{name: "cancel", program: swarmHeldTrainer, cancel: true, want: gantry.StateCanceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := d.submit(swarmTrainer(t, sw, tc.program), tc.args...)
			if tc.cancel {
				awaitHeld(t, d, id)
				d.mustGantry("cancel", id)
			}
			j := d.waitJob(id, 10*time.Minute)
			if j.State != tc.want || !strings.Contains(j.Error, tc.wantErr) {
				t.Fatalf("ended %s (%q), want %s with %q", j.State, j.Error, tc.want, tc.wantErr)
			}
			if left := swarmServices(t, sw, id); len(left) > 0 {
				t.Errorf("services left: %v", left)
			}
		})
	}
}

// A worker cut off mid-training: with no retries the job fails "node lost";
// with --retries 1 it trains again on another worker, the lost run an
// attempt in its record.
func TestSwarmNodeLost(t *testing.T) {
	d, sw := startSwarmDaemon(t)
	dir := swarmTrainer(t, sw, swarmHeldTrainer)
	ctx := context.Background()
	cutHeal := func(i int) {
		t.Helper()
		if err := sw.Cut(ctx, i); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sw.Heal(ctx, i)
			sw.WaitNodes(ctx, "ready", 5*time.Minute, i)
		})
	}

	lost := d.submit(dir, "--constraint", "node.labels.pool==train")
	awaitHeld(t, d, lost)
	cutHeal(trainNode)
	j := d.waitJob(lost, 10*time.Minute)
	if j.State != gantry.StateFailed || !strings.Contains(j.Error, "node lost") {
		t.Fatalf("without retries: ended %s (%q), want failed: node lost", j.State, j.Error)
	}
	if err := sw.Heal(ctx, trainNode); err != nil {
		t.Fatal(err)
	}
	if err := sw.WaitNodes(ctx, "ready", 5*time.Minute, trainNode); err != nil {
		t.Fatal(err)
	}

	retried := d.submit(dir, "--constraint", "node.role==worker", "--retries", "1")
	awaitHeld(t, d, retried)
	first := d.inspect(retried).Placement
	a := nodeIndex(t, sw, first.NodeID)
	cutHeal(a)
	j = awaitPlacement(t, d, retried, "a second run on another node", func(j *gantry.Job) bool {
		return len(j.Attempts) == 1 && j.Placement != nil && j.Placement.NodeID != "" && j.Placement.NodeID != first.NodeID
	})
	if j.Attempts[0].Placement.NodeID != first.NodeID || !strings.Contains(j.Attempts[0].Reason, "down") {
		t.Errorf("attempt %+v, want the lost run on %s, down", j.Attempts[0], first.NodeID)
	}
	b := nodeIndex(t, sw, j.Placement.NodeID)
	awaitLine(t, gantryLogs(d, retried), "trying again")
	awaitHeldAgain(t, d, retried)
	releaseOnNode(t, sw, b, retried)
	if j = d.waitJob(retried, 10*time.Minute); j.State != gantry.StateSucceeded {
		t.Fatalf("with --retries 1: ended %s (%q), want succeeded", j.State, j.Error)
	}
}

// awaitHeldAgain returns once job id's log says twice that it is held (the
// second run of a retried job).
func awaitHeldAgain(t *testing.T, d *gantryd, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for strings.Count(d.mustGantry("logs", id), "held until released") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("job %s's second run never said it was held:\n%s", id, d.mustGantry("logs", id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kill -9 of gantryd while a swarm job trains: the restarted gantryd finds
// the service by its record, and the log holds every line once.
func TestSwarmKill9(t *testing.T) {
	d, sw := startSwarmDaemon(t)
	id := d.submit(swarmTrainer(t, sw, swarmHeldTrainer))
	awaitHeld(t, d, id)
	node := nodeIndex(t, sw, d.inspect(id).Placement.NodeID)
	d.kill9()
	releaseOnNode(t, sw, node, id) // it finishes while gantryd is down
	d.start()
	j := d.waitJob(id, 10*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("ended %s (%q), want succeeded", j.State, j.Error)
	}
	log := d.mustGantry("logs", id)
	for i := 1; i <= 100; i++ {
		if n := strings.Count(log, fmt.Sprintf("line %d\n", i)); n != 1 {
			t.Errorf("line %d is in the log %d times, want once", i, n)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}
}
