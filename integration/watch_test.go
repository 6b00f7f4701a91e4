package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// counter is a trainer that prints numbered lines with short pauses, then
// its accuracy.
const counter = `import time
for i in range(20):
    print("step %d of 20" % i, flush=True)
    time.sleep(0.2)
print("Model accuracy: 0.9333", flush=True)
`

// everyStepOnce asserts that out holds each of counter's lines exactly once.
func everyStepOnce(t *testing.T, what, out string) {
	t.Helper()
	want := []string{"Model accuracy: 0.9333"}
	for i := 0; i < 20; i++ {
		want = append(want, fmt.Sprintf("step %d of 20\n", i))
	}
	for _, w := range want {
		if n := strings.Count(out, w); n != 1 {
			t.Errorf("%s holds %q %d times, want once:\n%s", what, w, n, out)
		}
	}
}

// gantry watch on a job under way, with no terminal: the log as it comes
// on stderr, every training line in it, and the outcome on stdout, with the
// digest the registry serves; exit 0.
func TestWatchARunningJob(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	ref := uniqueRef(t)
	id := d.submit(trainerDir(t, counter), "--push", ref, "--min-accuracy", "0.9")
	d.logHas(id, "step 2 of 20", 5*time.Minute)

	out, errOut, code := d.gantry("watch", id)
	if code != 0 {
		t.Fatalf("gantry watch: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	everyStepOnce(t, "gantry watch's stderr", errOut)
	j := d.inspect(id)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s), want succeeded", j.State, j.Error)
	}
	jobTag := repoOf(ref) + ":job-" + id
	want := fmt.Sprintf("job %s succeeded: accuracy 0.9333\npushed %s@%s\npushed %s@%s\n", id, ref, servedDigest(t, ref), jobTag, servedDigest(t, jobTag))
	if out != want {
		t.Errorf("gantry watch's stdout\n%q\nwant\n%q", out, want)
	}
	if strings.Contains(out+errOut, "\x1b[") {
		t.Errorf("gantry watch drew terminal escapes with no terminal:\n%q", errOut)
	}
}

// gantry logs -f started while the job trains ends when the job does, with
// every line of the container's output in it.
func TestLogsFollowEndsWithTheJob(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	id := d.submit(trainerDir(t, counter))
	d.logHas(id, "step 2 of 20", 5*time.Minute)

	out, errOut, code := d.gantry("logs", "-f", id)
	if code != 0 {
		t.Fatalf("gantry logs -f: exit %d\n%s", code, errOut)
	}
	if j := d.inspect(id); !j.State.Terminal() {
		t.Errorf("gantry logs -f returned while the job is %s", j.State)
	}
	everyStepOnce(t, "gantry logs -f", out)
	if !strings.HasSuffix(out, "==> succeeded\n") {
		t.Errorf("gantry logs -f does not end with the job's end:\n%s", out)
	}
}

// gantry watch on a terminal (a pseudo-terminal, through util-linux
// script): BuildKit's own display for the build, the training output, the
// push bar, and the outcome.
func TestWatchOnATerminal(t *testing.T) {
	t.Parallel()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("util-linux script is needed to give gantry a terminal: %v", err)
	}
	d := startDaemon(t)
	ref := uniqueRef(t)
	id := d.submit(trainerDir(t, counter, "RUN echo "+nonce()), "--push", ref)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "-qfec", fmt.Sprintf("'%s' watch %s", filepath.Join(binDir, "gantry"), id), "/dev/null")
	cmd.Env = append(os.Environ(), "GANTRY_HOST=unix://"+d.socket, "TERM=xterm")
	raw, err := cmd.Output()
	tty := string(raw)
	if err != nil {
		t.Fatalf("gantry watch on a terminal: %v\n%q", err, tty)
	}
	t.Logf("gantry watch on a terminal:\n%s", tty)

	for _, want := range []string{"[+] Building", "FINISHED", "RUN echo", "pushing [", "100%"} {
		if !strings.Contains(tty, want) {
			t.Errorf("the terminal shows no %q", want)
		}
	}
	everyStepOnce(t, "the terminal", strings.ReplaceAll(tty, "\r\n", "\n"))
	if strings.Contains(tty, "pushing: ") {
		t.Errorf("the terminal shows the push's raw progress lines, not the bar")
	}
	if strings.Contains(tty, "#1 [internal] load build definition") {
		t.Errorf("the terminal shows BuildKit's plain progress from the log besides its display")
	}
	outcome := regexp.MustCompile(`(?m)^job ` + id + ` succeeded: accuracy 0\.9333\r?$`)
	if !outcome.MatchString(tty) {
		t.Errorf("the terminal shows no outcome line")
	}
	if digest := servedDigest(t, ref); !strings.Contains(tty, "pushed "+ref+"@"+digest) {
		t.Errorf("the terminal does not show the digest the registry serves, %s", digest)
	}
}
