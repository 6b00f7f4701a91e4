// Package integration runs gantry the way a user does: the real gantryd and
// gantry binaries, against the real Docker engine, its embedded BuildKit and
// Debian's docker-registry. `make test` (scripts/services.sh) starts those;
// the tests fail, rather than skip, when they are missing. `go test -short`
// leaves this package out.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gantry-ml/gantry"
)

var (
	binDir string // where TestMain built gantryd and gantry
	// labClosers close the labs tests started (swarm_test.go), after
	// every test has run.
	labClosers []func() error
	registry   = envOr("GANTRY_TEST_REGISTRY", "127.0.0.1:5000")
	base       = envOr("GANTRY_BASE_IMAGE", "gantry/python-ml:bookworm")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipped with -short (they need dockerd, the registry and the base image)")
		os.Exit(0)
	}
	if err := preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\nStart what the tests need with: make services\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "gantry-it-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	// Tests run the CLI as other users too.
	os.Chmod(binDir, 0o755)
	build := exec.Command("go", "build", "-o", binDir+"/", "../cmd/gantryd", "../cmd/gantry")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: building the binaries: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	for _, c := range labClosers {
		if err := c(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: closing a lab: %v\n", err)
		}
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

func preflight() error {
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Errorf("no Docker engine answers: %v: %s", err, out)
	}
	if out, err := exec.Command("docker", "image", "inspect", base).CombinedOutput(); err != nil {
		return fmt.Errorf("the base image %s is missing: %s", base, firstLine(out))
	}
	resp, err := http.Get("http://" + registry + "/v2/")
	if err != nil {
		return fmt.Errorf("no registry answers at %s: %v", registry, err)
	}
	resp.Body.Close()
	return nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// gantryd is one running daemon, with its own socket and data dir.
type gantryd struct {
	t       *testing.T
	socket  string
	dataDir string
	args    []string
	env     []string // added to gantryd's environment
	cmd     *exec.Cmd
	log     *syncBuffer
	exited  chan struct{}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon starts gantryd with a fresh data dir and the given extra flags,
// and stops it when the test ends.
func startDaemon(t *testing.T, args ...string) *gantryd {
	t.Helper()
	return startDaemonEnv(t, nil, args...)
}

// startDaemonEnv is startDaemon with variables added to gantryd's
// environment.
func startDaemonEnv(t *testing.T, env []string, args ...string) *gantryd {
	t.Helper()
	return startDaemonAt(t, filepath.Join(t.TempDir(), "gantry.sock"), env, args...)
}

// startDaemonAt is startDaemonEnv with the socket at a path of the test's.
func startDaemonAt(t *testing.T, socket string, env []string, args ...string) *gantryd {
	t.Helper()
	d := &gantryd{t: t, socket: socket, dataDir: filepath.Join(t.TempDir(), "data"), args: args, env: env}
	d.start()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("gantryd's log:\n%s", d.log.String())
		}
	})
	return d
}

func (d *gantryd) start() {
	d.t.Helper()
	args := append([]string{"--socket", d.socket, "--data-dir", d.dataDir}, d.args...)
	d.cmd = exec.Command(filepath.Join(binDir, "gantryd"), args...)
	d.cmd.Env = append(os.Environ(), d.env...)
	d.log = &syncBuffer{}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start gantryd: %v", err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, code := d.gantry("version"); code == 0 {
			return
		}
		select {
		case <-d.exited:
			d.t.Fatalf("gantryd exited at start:\n%s", d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("gantryd did not serve within 30s:\n%s", d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for gantryd to exit.
func (d *gantryd) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("gantryd did not stop within 60s of SIGTERM")
	}
}

// gantry runs the CLI against this daemon and returns its stdout, stderr and
// exit code.
func (d *gantryd) gantry(args ...string) (stdout, stderr string, code int) {
	return d.gantryEnv(nil, args...)
}

// gantryEnv is gantry with variables added to the CLI's environment.
func (d *gantryd) gantryEnv(env []string, args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "gantry"), args...)
	cmd.Env = append(append(os.Environ(), "GANTRY_HOST=unix://"+d.socket), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		d.t.Fatalf("run gantry %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// mustGantry runs the CLI and fails the test unless it exits 0.
func (d *gantryd) mustGantry(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.gantry(args...)
	if code != 0 {
		d.t.Fatalf("gantry %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

// inspect returns the job's record as gantry inspect prints it.
func (d *gantryd) inspect(id string) *gantry.Job {
	d.t.Helper()
	var j gantry.Job
	if err := json.Unmarshal([]byte(d.mustGantry("inspect", id)), &j); err != nil {
		d.t.Fatalf("gantry inspect %s: %v", id, err)
	}
	return &j
}

// submit submits dir without waiting and returns the job ID.
func (d *gantryd) submit(dir string, args ...string) string {
	d.t.Helper()
	out := d.mustGantry(append([]string{"submit", dir}, args...)...)
	id := strings.TrimSpace(out)
	if !gantry.ValidID(id) {
		d.t.Fatalf("gantry submit printed %q, not a job ID", out)
	}
	removeJobImage(d.t, id)
	return id
}

// waitJob polls until the job is terminal.
func (d *gantryd) waitJob(id string, within time.Duration) *gantry.Job {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := d.inspect(id)
		if j.State.Terminal() {
			return j
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("job %s still %s after %v", id, j.State, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeJobImage removes the image gantry built for job id when the test
// ends, so tests leave nothing in the engine.
func removeJobImage(t *testing.T, id string) {
	t.Cleanup(func() {
		exec.Command("docker", "rmi", "-f", "gantry/job:"+id).Run()
	})
}

// trainerDir writes a minimal training context: a Dockerfile on the base
// image running the given Python program.
func trainerDir(t *testing.T, program string, extraDockerfile ...string) string {
	t.Helper()
	dir := t.TempDir()
	df := "FROM " + base + "\n" + strings.Join(extraDockerfile, "\n") + "\nCOPY train.py /train.py\nCMD [\"python3\", \"-u\", \"/train.py\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "train.py"), []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// uniqueRef returns a reference in the test registry that no earlier run
// used: one repository per test, a fresh tag per run.
func uniqueRef(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	repo := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("%s/gantry-it/%s:run-%s", registry, repo, hex.EncodeToString(b[:]))
}

// uniqueRepo returns a repository in the test registry that no earlier run
// used (for tests of tags whose history matters, like a champion's).
func uniqueRepo(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("%s/gantry-it/%s-%s", registry, name, hex.EncodeToString(b[:]))
}

// servedDigest returns the digest the registry serves for ref, or "" when it
// has no such tag.
func servedDigest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := remote.Head(r, remote.WithContext(ctx))
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return ""
	}
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest.String()
}

// leftoverContainers lists containers that carry job id's label.
func leftoverContainers(t *testing.T, id string) string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=io.gantry.job="+id).CombinedOutput()
	if err != nil {
		t.Fatalf("docker ps: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}
