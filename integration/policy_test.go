package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// A user with nothing but the socket cannot ask for what owns the host: the
// capabilities and the network that escalated in an attack are refused at
// submit, naming the policy flag, and nothing is stored or run.
func TestEscalationRefusedByDefault(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "print('Model accuracy: 0.95')\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cap-add", "SYS_ADMIN", "--cap-add", "DAC_OVERRIDE"}, "--allow-host-root"},
		{[]string{"--cap-add", "DAC_READ_SEARCH"}, "--allow-host-root"},
		{[]string{"--cap-add", "NET_RAW"}, "--allow-host-root"},
		{[]string{"--cap-add", "NET_BIND_SERVICE"}, "--allow-cap NET_BIND_SERVICE"},
		{[]string{"--network", "host"}, "--allow-network"},
		{[]string{"--network", "bridge"}, "--allow-network"},
		{[]string{"--pids-limit", "100000"}, "--pids-limit"},
		{[]string{"--train-timeout", "100h"}, "--train-timeout"},
	} {
		out, errOut, code := d.gantry(append([]string{"submit", dir}, tc.args...)...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("submit %v: exit %d, stdout %q, stderr %q; want a refusal naming %s", tc.args, code, out, errOut, tc.want)
		}
	}
	if n := jobCount(t, d); n != 0 {
		t.Errorf("%d jobs recorded after refusals, want none", n)
	}
	if left, _ := os.ReadDir(filepath.Join(d.dataDir, "contexts")); len(left) != 0 {
		t.Errorf("build contexts left by refused submissions: %v", left)
	}
	info := d.mustGantry("info")
	for _, want := range []string{"capabilities (--allow-cap):", "none", "--allow-host-root", "pids (--pids-limit):"} {
		if !strings.Contains(info, want) {
			t.Errorf("gantry info lacks %q:\n%s", want, info)
		}
	}
	var api struct{ Policy gantry.Policy }
	if err := json.Unmarshal([]byte(d.mustGantry("info", "--json")), &api); err != nil || api.Policy.HostRoot || len(api.Policy.CapAdd) != 0 || api.Policy.Resources.PidsLimit != 1024 {
		t.Errorf("GET /v1/info policy %+v (%v); want no capability, no host root, pids 1024", api.Policy, err)
	}
}

// gantryd refuses a policy that hands out root unless the operator says so
// in as many words.
func TestRootGivingPolicyNeedsItsFlag(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--allow-cap", "SYS_ADMIN"},
		{"--allow-cap", "dac_read_search"},
		{"--allow-network", "host"},
	} {
		cmd := exec.Command(filepath.Join(binDir, "gantryd"), append([]string{"--socket", filepath.Join(t.TempDir(), "s.sock"), "--data-dir", t.TempDir()}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--allow-host-root") {
			t.Errorf("gantryd %v: %v\n%s\nwant a refusal to start naming --allow-host-root", args, err, out)
		}
	}
	// Said in as many words, it starts, and shows it.
	d := startDaemon(t, "--allow-cap", "SYS_ADMIN", "--allow-host-root")
	if info := d.mustGantry("info"); !strings.Contains(info, "SYS_ADMIN") {
		t.Errorf("gantry info does not show the allowed capability:\n%s", info)
	}
}

// heldTail is a trainer's tail: it says it is held, waits until the test
// releases it (release: a file created in its container), then reports the
// accuracy its ACC environment variable gives (0.95 when unset). The test,
// not timing, decides when a held job ends.
const heldTail = `
import os, time
print("held until released", flush=True)
while not os.path.exists("/tmp/gantry-it-release"):
    time.sleep(0.05)
print("Model accuracy:", os.environ.get("ACC") or "0.95", flush=True)
`

// release lets job id's held trainer report and end.
func release(t *testing.T, id string) {
	t.Helper()
	if out, err := exec.Command("docker", "exec", "gantry-"+id, "touch", "/tmp/gantry-it-release").CombinedOutput(); err != nil {
		t.Fatalf("release job %s's trainer: %v: %s", id, err, out)
	}
}

// awaitHeld returns once job id's trainer says it is held, reading the
// job's log as gantry logs -f streams it. It fails when the log ends (the
// job ended) before that.
func awaitHeld(t *testing.T, d *gantryd, id string) {
	t.Helper()
	awaitLine(t, gantryLogs(d, id), "held until released")
}

// gantryLogs is gantry logs -f of job id, not yet started.
func gantryLogs(d *gantryd, id string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "gantry"), "logs", "-f", id)
	cmd.Env = append(os.Environ(), "GANTRY_HOST=unix://"+d.socket)
	return cmd
}

// awaitLine runs cmd, a follower of a log, until a line of its output holds
// want, then stops it. It fails the test when the output ends first, or
// after five minutes (a broken run, not an order of events).
func awaitLine(t *testing.T, cmd *exec.Cmd, want string) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	stuck := time.AfterFunc(5*time.Minute, func() { cmd.Process.Kill() })
	defer stuck.Stop()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) {
			return
		}
	}
	t.Fatalf("%v ended without a line holding %q", cmd.Args, want)
}

// engineContainer is what docker inspect says of a container.
type engineContainer struct {
	LogPath    string
	HostConfig struct {
		LogConfig struct {
			Type   string
			Config map[string]string
		}
	}
	Mounts []struct{ Type, Name, Destination string }
}

func inspectContainer(t *testing.T, name string) (engineContainer, bool) {
	t.Helper()
	out, err := exec.Command("docker", "inspect", name).Output()
	if err != nil {
		return engineContainer{}, false
	}
	var cs []engineContainer
	if err := json.Unmarshal(out, &cs); err != nil || len(cs) != 1 {
		t.Fatalf("docker inspect %s: %v: %s", name, err, out)
	}
	return cs[0], true
}

// The engine's own log of a trainer that floods its output stays within the
// job's log cap (before, 1 GiB of output became a 1.07 GiB file under the
// engine's data root).
func TestFloodingTrainerEngineLogBounded(t *testing.T) {
	t.Parallel()
	const capBytes = 1 << 20
	d := startDaemon(t, "--max-log", "1m")
	id := d.submit(trainerDir(t, `import sys
print("flooding", flush=True)
line = "x" * 999 + "\n"
for _ in range(64):
    sys.stdout.write(line * 1024)
sys.stdout.flush()
open("/tmp/gantry-it-flooded", "w").close()
`+heldTail))
	// gantry's log drops what is over its cap, the held line with it: the
	// trainer marks the flood's end with a file in its container instead,
	// and a process in the container waits for that file.
	awaitLine(t, gantryLogs(d, id), "flooding")
	wait := `import os, time
while not os.path.exists("/tmp/gantry-it-flooded"):
    time.sleep(0.05)`
	if out, err := exec.Command("docker", "exec", "gantry-"+id, "python3", "-c", wait).CombinedOutput(); err != nil {
		t.Fatalf("wait for the flood's end in job %s's container: %v: %s", id, err, out)
	}
	c, ok := inspectContainer(t, "gantry-"+id)
	if !ok {
		t.Fatalf("container gantry-%s is gone", id)
	}
	fi, err := os.Stat(c.LogPath)
	if err != nil {
		t.Fatalf("the engine's log of the container: %v", err)
	}
	if lc := c.HostConfig.LogConfig; lc.Type != "json-file" || lc.Config["max-size"] != fmt.Sprint(capBytes) {
		t.Errorf("log config %+v, want json-file with max-size %d", lc, capBytes)
	}
	// One line more than the cap at most: the engine rotates after a write.
	if fi.Size() > capBytes+64<<10 {
		t.Errorf("the engine's log file holds %d bytes after 64 MiB of output; want at most the job's cap, %d", fi.Size(), capBytes)
	}
	release(t, id)
	if j := d.waitJob(id, 2*time.Minute); j.State != gantry.StateSucceeded {
		t.Errorf("the flooding job: %s (%s), want succeeded", j.State, j.Error)
	}
}

// A trainer whose image declares a VOLUME leaves no volume behind: the
// engine makes an anonymous one per container, removed with it.
func TestVolumeTrainerLeavesNoVolume(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	id := d.submit(trainerDir(t, `open("/data/scratch", "w").write("x" * 1024)`+"\n"+heldTail, "VOLUME /data"))
	awaitHeld(t, d, id)
	c, _ := inspectContainer(t, "gantry-"+id)
	var volume string
	for _, m := range c.Mounts {
		if m.Type == "volume" && m.Destination == "/data" {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Fatalf("job %s's container has no volume at /data: %+v", id, c.Mounts)
	}
	release(t, id)
	if j := d.waitJob(id, 2*time.Minute); j.State != gantry.StateSucceeded {
		t.Fatalf("the VOLUME job: %s (%s), want succeeded", j.State, j.Error)
	}
	if out, err := exec.Command("docker", "volume", "inspect", volume).CombinedOutput(); err == nil {
		exec.Command("docker", "volume", "rm", volume).Run()
		t.Errorf("volume %s of the job's container is left: %s", volume, out)
	}
}

// A build cannot fetch what only the host's loopback serves: the engine
// fetches ADD URLs from the host's network namespace.
func TestBuildFetchFromLoopbackRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits := make(chan string, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.URL.Path
		fmt.Fprintln(w, "host-only secret")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	d := startDaemon(t)
	port := ln.Addr().(*net.TCPAddr).Port
	for _, add := range []string{
		fmt.Sprintf("ADD http://127.0.0.1:%d/secret /secret", port),
		fmt.Sprintf("ADD http://localhost:%d/secret /secret", port),
		fmt.Sprintf("ARG SRC=http://127.0.0.1:%d/secret\nADD ${SRC} /secret", port),
	} {
		dir := trainerDir(t, "print('Model accuracy: 0.95')\n", add)
		out, errOut, code := d.gantry("submit", dir)
		if code == 0 || !strings.Contains(errOut, "host itself") {
			t.Errorf("submit with %q: exit %d, %q %q; want a refusal: the host's own address", add, code, out, errOut)
		}
	}
	if n := jobCount(t, d); n != 0 {
		t.Errorf("%d jobs recorded, want none", n)
	}
	select {
	case p := <-hits:
		t.Errorf("the host-only service was fetched from (%s)", p)
	default:
	}
}

// A full queue answers 429, saying which bound is reached; the daemon keeps
// serving and takes work again once the queue moves.
func TestQueueLimitAnswers429(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "1", "--max-queue", "1")
	dir := trainerDir(t, heldTail)
	running := d.submit(dir)
	d.waitFor(running, "its slot", 3*time.Minute, func(j *gantry.Job) bool { return j.State != gantry.StateQueued })
	queued := d.submit(dir)
	_, errOut, code := d.gantry("submit", dir)
	if code == 0 || !strings.Contains(errOut, "--max-queue 1") {
		t.Errorf("a submission to a full queue: exit %d, %q; want a refusal naming --max-queue 1", code, errOut)
	}
	// The API's own answer is 429.
	var ctx bytes.Buffer
	tarDir(t, dir, &ctx)
	spec := url.QueryEscape(`{}`)
	resp, err := socketClient(d.socket).Post("http://gantry/v1/jobs?spec="+spec, "application/x-tar", &ctx)
	if err != nil {
		t.Fatalf("POST /v1/jobs: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("POST /v1/jobs to a full queue: %d, want 429", resp.StatusCode)
	}
	for _, id := range []string{running, queued} {
		d.mustGantry("cancel", id)
	}
	d.waitJob(queued, time.Minute)
	d.waitJob(running, time.Minute)
	again := d.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"))
	if j := d.waitJob(again, 3*time.Minute); j.State != gantry.StateSucceeded {
		t.Errorf("a job after the queue moved: %s (%s)", j.State, j.Error)
	}
}

// tarDir writes dir as a tar stream, the way gantry submit sends it.
func tarDir(t *testing.T, dir string, w *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command("tar", "-C", dir, "-cf", "-", ".")
	cmd.Stdout = w
	if err := cmd.Run(); err != nil {
		t.Fatalf("tar %s: %v", dir, err)
	}
}

// jobCount is the number of jobs the daemon holds, as GET /v1/jobs says.
func jobCount(t *testing.T, d *gantryd) int {
	t.Helper()
	resp, err := socketClient(d.socket).Get("http://gantry/v1/jobs")
	if err != nil {
		t.Fatalf("GET /v1/jobs: %v", err)
	}
	defer resp.Body.Close()
	var page struct{ Jobs []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatalf("GET /v1/jobs: %v", err)
	}
	return len(page.Jobs)
}

// The 38-byte pattern that made the metric reader crawl at 14 KB/s is
// refused at submit; a trainer flooding lines a costly accepted pattern
// must examine only slows its own job.
func TestSlowMetricPatternRefused(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := trainerDir(t, "print('Model accuracy: 0.95')\n")
	_, errOut, code := d.gantry("submit", dir, "--metric-regex", `(?:[\p{L}\p{N}\p{S}\p{P}\p{Z}]{1000}z)`)
	if code == 0 || !strings.Contains(errOut, "metric") {
		t.Errorf("submit with the slow pattern: exit %d, %q; want a refusal of the metric pattern", code, errOut)
	}
	if n := jobCount(t, d); n != 0 {
		t.Errorf("%d jobs recorded, want none", n)
	}
	flood := trainerDir(t, `import sys
line = "accuracy:" * 300 + "\n"
for _ in range(780):
    sys.stdout.write(line)
print("Accuracy: 0.91", flush=True)
`)
	id := d.submit(flood, "--metric-regex", `(?i)accuracy[:=]\s*(\S+)`, "--cpus", "0.1")
	if j := d.waitJob(id, 3*time.Minute); j.State != gantry.StateSucceeded || j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 0.91 {
		t.Errorf("a 2 MB flood for a costly pattern: %s (%s), accuracy %v; want succeeded, 0.91", j.State, j.Error, j.Metrics.Accuracy)
	}
}
