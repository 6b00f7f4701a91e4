package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/lab"
)

// kill9 kills gantryd with SIGKILL, as a crash would.
func (d *gantryd) kill9() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// waitFor polls the job until cond holds.
func (d *gantryd) waitFor(id string, what string, within time.Duration, cond func(*gantry.Job) bool) *gantry.Job {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := d.inspect(id)
		if cond(j) {
			return j
		}
		if j.State.Terminal() || time.Now().After(deadline) {
			d.t.Fatalf("job %s: waited for %s, but it is %s (%s)", id, what, j.State, j.Error)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func inState(s gantry.State) func(*gantry.Job) bool {
	return func(j *gantry.Job) bool { return j.State == s }
}

// logHas waits until the job's log holds s.
func (d *gantryd) logHas(id, s string, within time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(d.mustGantry("logs", id), s) {
		if time.Now().After(deadline) {
			d.t.Fatalf("job %s: the log never held %q:\n%s", id, s, d.mustGantry("logs", id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sleeper is a trainer that prints numbered lines before and after a pause.
const sleeper = `import time
for i in range(5):
    print("before", i, flush=True)
time.sleep(%d)
for i in range(5):
    print("after", i, flush=True)
print("Model accuracy: 0.9333", flush=True)
`

// checkEveryLineOnce asserts that the job's log holds each of the sleeper's
// lines exactly once, and the training section once.
func checkEveryLineOnce(t *testing.T, d *gantryd, id string) {
	t.Helper()
	logs := d.mustGantry("logs", id)
	want := []string{"Model accuracy: 0.9333", "==> training in container"}
	for i := 0; i < 5; i++ {
		want = append(want, fmt.Sprintf("before %d", i), fmt.Sprintf("after %d", i))
	}
	for _, w := range want {
		if n := strings.Count(logs, w); n != 1 {
			t.Errorf("the log holds %q %d times, want once:\n%s", w, n, logs)
		}
	}
}

func noContainersLeft(t *testing.T, id string) {
	t.Helper()
	// Removal follows the record's last write by a moment.
	deadline := time.Now().Add(30 * time.Second)
	for leftoverContainers(t, id) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("containers of job %s left behind: %s", id, leftoverContainers(t, id))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nonce makes a build step that no earlier run has cached.
func nonce() string { return fmt.Sprint(time.Now().UnixNano()) }

// kill -9 while a job trains: the container runs on; the restarted gantryd
// re-attaches and the log has every line exactly once.
func TestKill9WhileTraining(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, fmt.Sprintf(sleeper, 4))
	id := d.submit(dir, "--min-accuracy", "0.9")
	d.logHas(id, "before 4", 2*time.Minute)
	d.kill9()
	d.start()
	j := d.waitJob(id, 2*time.Minute)
	if j.State != gantry.StateSucceeded || j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 0.9333 {
		t.Fatalf("after the restart: %s, accuracy %v (%s); want succeeded with 0.9333", j.State, j.Metrics.Accuracy, j.Error)
	}
	checkEveryLineOnce(t, d, id)
	noContainersLeft(t, id)
}

// kill -9 while a job trains, and the container exits while gantryd is
// down: its exit code and log are collected on restart.
func TestKill9ContainerExitsWhileDown(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, fmt.Sprintf(sleeper, 2))
	id := d.submit(dir)
	d.logHas(id, "before 4", 2*time.Minute)
	d.kill9()
	if out, err := exec.Command("docker", "wait", "gantry-"+id).CombinedOutput(); err != nil {
		t.Fatalf("docker wait: %v: %s", err, out)
	}
	d.start()
	j := d.waitJob(id, 2*time.Minute)
	if j.State != gantry.StateSucceeded || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Fatalf("after the restart: %s, exit %v (%s); want succeeded, exit 0", j.State, j.ExitCode, j.Error)
	}
	checkEveryLineOnce(t, d, id)
	noContainersLeft(t, id)
}

// kill -9 while a job is queued and another builds: after the restart both
// run, once each, in order.
func TestKill9WhileQueuedAndBuilding(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "1")
	slow := trainerDir(t, "print('Model accuracy: 0.91')\n", "ARG NONCE", `RUN echo "build $NONCE" && sleep 3`)
	building := d.submit(slow, "--build-arg", "NONCE="+nonce())
	queued := d.submit(trainerDir(t, fmt.Sprintf(sleeper, 0)))
	d.logHas(building, "build ", 2*time.Minute)
	if j := d.inspect(queued); j.State != gantry.StateQueued {
		t.Fatalf("second job %s, want queued", j.State)
	}
	d.kill9()
	d.start()
	a := d.waitJob(building, 3*time.Minute)
	b := d.waitJob(queued, 3*time.Minute)
	if a.State != gantry.StateSucceeded || b.State != gantry.StateSucceeded {
		t.Fatalf("after the restart: %s (%s) and %s (%s), want both succeeded", a.State, a.Error, b.State, b.Error)
	}
	if b.Times.Build.Started.Before(*a.Times.Finished) {
		t.Errorf("the queued job started before the rebuilt one finished")
	}
	checkEveryLineOnce(t, d, queued)
	for _, id := range []string{building, queued} {
		noContainersLeft(t, id)
	}
}

// kill -9 while a job pushes: the push is redone and the record ends with
// the digest the registry serves.
func TestKill9WhilePushing(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	ref := uniqueRef(t)
	id := d.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"), "--push", ref)
	d.waitFor(id, "pushing", 3*time.Minute, inState(gantry.StatePushing))
	d.kill9()
	d.start()
	j := d.waitJob(id, 5*time.Minute)
	if j.State != gantry.StateSucceeded || len(j.Pushes) != 2 {
		t.Fatalf("after the restart: %s (%s), pushes %+v; want succeeded, pushed to the ref and the job tag", j.State, j.Error, j.Pushes)
	}
	if served := servedDigest(t, ref); j.Pushes[0].Digest != served {
		t.Errorf("recorded digest %s, the registry serves %s", j.Pushes[0].Digest, served)
	}
	noContainersLeft(t, id)
}

// Cancel in each state: canceled, nothing left behind, cancel twice is
// harmless.
func TestCancelInEachState(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "1", "--stop-timeout", "2s")
	blocker := trainerDir(t, fmt.Sprintf(sleeper, 600))

	running := d.submit(blocker)
	queued := d.submit(blocker)
	d.logHas(running, "before 4", 2*time.Minute)
	cancelJob(t, d, queued)
	if j := d.inspect(queued); j.Times.Build.Started != nil {
		t.Errorf("a job canceled while queued started building")
	}
	cancelJob(t, d, running)

	building := d.submit(trainerDir(t, "print('never')\n", "ARG NONCE", `RUN echo "build $NONCE" && sleep 600`), "--build-arg", "NONCE="+nonce())
	d.logHas(building, "build ", 2*time.Minute)
	cancelJob(t, d, building)

	pushing := d.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"), "--push", uniqueRef(t))
	d.waitFor(pushing, "pushing", 3*time.Minute, inState(gantry.StatePushing))
	cancelJob(t, d, pushing)

	entries, _ := os.ReadDir(filepath.Join(d.dataDir, "contexts"))
	if len(entries) != 0 {
		t.Errorf("build contexts left in the data dir: %v", entries)
	}
	if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.gantry.job").Output(); len(out) > 0 {
		for _, id := range []string{running, queued, building, pushing} {
			if c := leftoverContainers(t, id); c != "" {
				t.Errorf("job %s left container %s", id, c)
			}
		}
	}
}

// cancelJob cancels id with the CLI, twice, and checks what is left.
func cancelJob(t *testing.T, d *gantryd, id string) {
	t.Helper()
	for i := 0; i < 2; i++ {
		out, errOut, code := d.gantry("cancel", id)
		if code != 0 || !strings.Contains(out, id+" canceled") {
			t.Fatalf("gantry cancel %s (call %d): exit %d\n%s%s", id, i+1, code, out, errOut)
		}
	}
	j := d.inspect(id)
	if j.State != gantry.StateCanceled {
		t.Fatalf("job %s: %s after cancel", id, j.State)
	}
	noContainersLeft(t, id)
	if err := exec.Command("docker", "image", "inspect", j.ImageName).Run(); err == nil {
		t.Errorf("job %s: its image %s is left after cancel", id, j.ImageName)
	}
}

// Phase timeouts end a job as failed, naming the phase and the limit; an
// out-of-memory kill is reported as such.
func TestTimeoutsAndOOM(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--stop-timeout", "1s")
	cases := []struct {
		name, program string
		dockerfile    []string
		args          []string
		want          string
	}{
		{"build", "print('x')\n", []string{"ARG NONCE", `RUN echo "$NONCE" && sleep 600`}, []string{"--build-timeout", "2s"}, "build timed out after 2s"},
		{"training", fmt.Sprintf(sleeper, 600), nil, []string{"--train-timeout", "3s"}, "training timed out after 3s"},
		{"oom", "x = bytearray(512 * 1024 * 1024)\nprint('accuracy: 0.99')\n", nil, []string{"--memory", "64m"}, "OOMKilled"},
	}
	for _, c := range cases {
		dir := trainerDir(t, c.program, c.dockerfile...)
		id := d.submit(dir, append(c.args, "--build-arg", "NONCE="+nonce())...)
		j := d.waitJob(id, 3*time.Minute)
		if j.State != gantry.StateFailed || !strings.Contains(j.Error, c.want) {
			t.Errorf("%s: %s (%q), want failed with %q", c.name, j.State, j.Error, c.want)
		}
		noContainersLeft(t, id)
	}
}

// A registry answering 503 to the push after the gate is retried with
// backoff; one that is down fails
// the job when the push timeout passes, naming the registry; gantry push
// pushes it later, once the registry is up.
func TestRegistryTrouble(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	target, _ := url.Parse("http://" + registry)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var refused atomic.Int32
	flaky := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Manifests only: the blobs went up while the job trained, and it
		// is the push after the gate that must retry.
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && refused.Add(1) <= 2 {
			http.Error(w, "registry overloaded", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go flaky.Serve(ln)
	t.Cleanup(func() { flaky.Close() })

	dir := trainerDir(t, "print('Model accuracy: 0.95')\n")
	flakyRef := strings.Replace(uniqueRef(t), registry, ln.Addr().String(), 1)
	id := d.submit(dir, "--push", flakyRef)
	j := d.waitJob(id, 5*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("push through a flaky registry: %s (%s), want succeeded after retries", j.State, j.Error)
	}
	if logs := d.mustGantry("logs", id); !strings.Contains(logs, "retrying") {
		t.Errorf("the log does not show the retries:\n%s", logs)
	}

	// A registry that is down: a port nobody listens on.
	down, _ := net.Listen("tcp", "127.0.0.1:0")
	downAddr := down.Addr().String()
	down.Close()
	downRepo := fmt.Sprintf("%s/gantry-it/later-%s", downAddr, nonce())
	downRef := downRepo + ":v1"
	id = d.submit(dir, "--push", downRef, "--push-timeout", "20s")
	j = d.waitJob(id, 3*time.Minute)
	if j.State != gantry.StateFailed || !strings.Contains(j.Error, "push timed out after 20s") || !strings.Contains(j.Error, downAddr) {
		t.Fatalf("push to a registry that is down: %s (%q), want failed naming the timeout and %s", j.State, j.Error, downAddr)
	}

	// Bring the registry up at that address (the test registry, which has
	// the base's layers: gantry push has the job's push limit, and what it
	// sends must not depend on the machine's speed), then push the job
	// again.
	up, err := net.Listen("tcp", downAddr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", downAddr, err)
	}
	upSrv := &http.Server{Handler: proxy}
	go upSrv.Serve(up)
	t.Cleanup(func() { upSrv.Close() })
	out := d.mustGantry("push", id)
	j = d.inspect(id)
	// As the job's own push would have: the reference, then the job tag.
	jobTag := downRepo + ":job-" + id
	if len(j.Pushes) != 2 || j.Pushes[0].Ref != downRef || j.Pushes[1].Ref != jobTag {
		t.Fatalf("after gantry push: pushes %+v, want %s and %s", j.Pushes, downRef, jobTag)
	}
	if served := servedDigest(t, downRef); served != j.Pushes[0].Digest || !strings.Contains(out, served) {
		t.Errorf("gantry push recorded %s and printed %q; the registry serves %s", j.Pushes[0].Digest, out, served)
	}
	// Again: idempotent, same digest.
	d.mustGantry("push", id)
	if again := d.inspect(id); !reflect.DeepEqual(again.Pushes, j.Pushes) {
		t.Errorf("a second gantry push changed the record: %+v", again.Pushes)
	}
	// A rejected job cannot be pushed.
	rej := d.submit(trainerDir(t, "print('accuracy: 0.1')\n"), "--min-accuracy", "0.5")
	d.waitJob(rej, 3*time.Minute)
	if _, errOut, code := d.gantry("push", rej, "--to", downRef); code == 0 || !strings.Contains(errOut, "gate") {
		t.Errorf("gantry push of a rejected job: exit %d, %q; want refused, naming the gate", code, errOut)
	}
}

// runRegistry runs docker-registry (its files under dir, extra added to its
// configuration) until the test ends, once /v2/ answers with the status
// wanted, and returns its address.
func runRegistry(t *testing.T, dir, extra string, want int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := lab.StartLocalRegistry(ctx, dir, extra, want)
	if err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("docker-registry's log:\n%s", r.Log())
		}
		r.Close()
	})
	return r.Addr
}

// A container that carries gantryd's labels but belongs to no job is
// removed after the grace period.
func TestOrphanContainerIsRemoved(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--orphan-grace", "2s")
	m := regexp.MustCompile(`instance=([0-9a-f]+)`).FindStringSubmatch(d.log.String())
	if m == nil {
		t.Fatalf("gantryd's log names no instance:\n%s", d.log.String())
	}
	ghost := gantry.NewID(time.Now())
	out, err := exec.Command("docker", "create", "--label", "io.gantry.daemon="+m[1], "--label", "io.gantry.job="+ghost, base, "true").CombinedOutput()
	if err != nil {
		t.Fatalf("docker create: %v: %s", err, out)
	}
	cid := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", cid).Run() })
	// And one of another gantryd, which this one must leave alone.
	other, err := exec.Command("docker", "create", "--label", "io.gantry.daemon=someoneelse", "--label", "io.gantry.job="+ghost, base, "true").CombinedOutput()
	if err != nil {
		t.Fatalf("docker create: %v: %s", err, other)
	}
	otherID := strings.TrimSpace(string(other))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", otherID).Run() })

	deadline := time.Now().Add(time.Minute)
	for leftoverContainers(t, ghost) != otherID[:12] {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute, containers of the unknown job: %q; want only the other daemon's %.12s", leftoverContainers(t, ghost), otherID)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
