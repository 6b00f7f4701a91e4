package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/internal/iox"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/store"
)

// pipeDeadline bounds every wait on the daemon. It is generous on purpose:
// a slow machine makes a test slower, never makes it fail.
const pipeDeadline = 30 * time.Second

// pipeDockerfile is the Dockerfile every test context carries.
const pipeDockerfile = "FROM python:3.12-slim\nCOPY train.py /\nCMD [\"python\", \"/train.py\"]\n"

// pipeProgress is what the fake builder writes as BuildKit progress.
const pipeProgress = "#1 [internal] load build definition from Dockerfile\n#1 DONE 0.0s\n#5 [2/2] COPY train.py /\n#5 DONE 0.1s\n"

// pipeInstance is the instance ID test daemons label their containers with.
const pipeInstance = "0123456789abcdef"

// pipeBuilder is a fake imageBuilder. It records each request and the
// Dockerfile it found in the request's context directory, then calls build.
type pipeBuilder struct {
	build func(ctx context.Context, r builder.Request, progress io.Writer) (string, error)

	mu          sync.Mutex
	requests    []builder.Request
	dockerfiles []string
}

func (b *pipeBuilder) Build(ctx context.Context, r builder.Request, progress io.Writer) (builder.Result, error) {
	id, err := b.buildID(ctx, r, progress)
	if err != nil {
		return builder.Result{}, err
	}
	return builder.Result{ImageID: id, Bases: []string{"python:3.12-slim"}}, nil
}

func (b *pipeBuilder) buildID(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
	df, err := os.ReadFile(filepath.Join(r.ContextDir, r.Spec.Dockerfile))
	if err != nil {
		df = []byte("unreadable: " + err.Error())
	}
	b.mu.Lock()
	b.requests = append(b.requests, r)
	b.dockerfiles = append(b.dockerfiles, string(df))
	b.mu.Unlock()
	if b.build == nil {
		fmt.Fprint(progress, pipeProgress)
		return pipeImageID(pipeJobOf(r)), nil
	}
	return b.build(ctx, r, progress)
}

func (b *pipeBuilder) built() (reqs []builder.Request, dockerfiles []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.requests), slices.Clone(b.dockerfiles)
}

func pipeImageID(jobID string) string { return "sha256:image-of-" + jobID }

// pipeJobOf is the job (or sweep) whose image r builds, read from the name
// the image gets: the image itself carries no label of the job.
func pipeJobOf(r builder.Request) string {
	_, id, _ := strings.Cut(r.Name, ":")
	return id
}

func pipeContainerID(jobID string) string { return "ctr-" + jobID }

// pipeCall is one call made to the fake engine: the method and its
// container ID, name or image reference.
type pipeCall struct{ op, arg string }

func (c pipeCall) String() string { return c.op + " " + c.arg }

// pipeEngine is a fake Engine. A nil function field succeeds: create names
// the container after the job, run prints nothing and exits 0, state says
// the container runs, the others return nil and containers lists none.
// Every call is recorded, in order.
type pipeEngine struct {
	create      func(ctx context.Context, s runner.Spec) (string, error)
	run         func(ctx context.Context, id string, out io.Writer) (runner.Exit, error)
	state       func(ctx context.Context, id string) (runner.State, error)
	stop        func(ctx context.Context, id string, grace time.Duration) error
	remove      func(ctx context.Context, id string) error
	removeImage func(ctx context.Context, ref string) error
	containers  func(ctx context.Context, labels map[string]string) ([]runner.Container, error)
	ping        func(ctx context.Context) error
	// copyFrom, when set, answers CopyFrom; else the tar setOutputs set
	// for the container is served, and without one the path is not found.
	copyFrom func(ctx context.Context, id, path string) (io.ReadCloser, error)
	volume   func(ctx context.Context, name string) (runner.Volume, error)

	mu      sync.Mutex
	outputs map[string][]byte // container ID -> tar of its output directory
	created []runner.Spec
	listed  []map[string]string
	log     []pipeCall
}

func (e *pipeEngine) record(op, arg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, pipeCall{op, arg})
}

func (e *pipeEngine) Create(ctx context.Context, s runner.Spec) (string, error) {
	e.mu.Lock()
	e.created = append(e.created, s)
	e.mu.Unlock()
	e.record("create", s.Name)
	if e.create == nil {
		return pipeContainerID(s.Labels[runner.LabelJob]), nil
	}
	return e.create(ctx, s)
}

func (e *pipeEngine) Name() string { return gantry.BackendLocal }

func (e *pipeEngine) Run(ctx context.Context, id string, out io.Writer, watch runner.Watch) (runner.Exit, error) {
	e.record("run", id)
	if watch != nil {
		watch(gantry.Placement{Backend: gantry.BackendLocal, Node: "pipe"})
	}
	if e.run == nil {
		return runner.Exit{}, nil
	}
	return e.run(ctx, id, out)
}

func (e *pipeEngine) State(ctx context.Context, id string) (runner.State, error) {
	e.record("state", id)
	if e.state == nil {
		return runner.State{Running: true}, nil
	}
	return e.state(ctx, id)
}

func (e *pipeEngine) Stop(ctx context.Context, id string, grace time.Duration) error {
	e.record("stop", id)
	if e.stop == nil {
		return nil
	}
	return e.stop(ctx, id, grace)
}

func (e *pipeEngine) Remove(ctx context.Context, id string) error {
	e.record("remove", id)
	if e.remove == nil {
		return nil
	}
	return e.remove(ctx, id)
}

func (e *pipeEngine) CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error) {
	e.record("copy", id)
	if e.copyFrom != nil {
		return e.copyFrom(ctx, id, path)
	}
	e.mu.Lock()
	data, ok := e.outputs[id]
	e.mu.Unlock()
	if !ok {
		return nil, gantry.Errorf(gantry.ErrNotFound, "%s: not in container %s", path, id)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// setOutputs makes CopyFrom of container id serve data, a tar stream as
// the engine sends it.
func (e *pipeEngine) setOutputs(id string, data []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.outputs == nil {
		e.outputs = map[string][]byte{}
	}
	e.outputs[id] = data
}

func (e *pipeEngine) Volume(ctx context.Context, name string) (runner.Volume, error) {
	e.record("volume", name)
	if e.volume == nil {
		return runner.Volume{Name: name}, nil
	}
	return e.volume(ctx, name)
}

func (e *pipeEngine) ImageID(ctx context.Context, ref string) (string, error) {
	return "sha256:base-of-" + ref, nil
}

func (e *pipeEngine) RemoveImage(ctx context.Context, ref string) error {
	e.record("rmi", ref)
	if e.removeImage == nil {
		return nil
	}
	return e.removeImage(ctx, ref)
}

func (e *pipeEngine) Containers(ctx context.Context, labels map[string]string) ([]runner.Container, error) {
	e.mu.Lock()
	e.listed = append(e.listed, maps.Clone(labels))
	e.mu.Unlock()
	e.record("containers", "")
	if e.containers == nil {
		return nil, nil
	}
	return e.containers(ctx, labels)
}

func (e *pipeEngine) Ping(ctx context.Context) error {
	e.record("ping", "")
	if e.ping == nil {
		return nil
	}
	return e.ping(ctx)
}

// args returns the arguments of the calls to op, in order.
func (e *pipeEngine) args(op string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, c := range e.log {
		if c.op == op {
			out = append(out, c.arg)
		}
	}
	return out
}

// calls returns every call, in order.
func (e *pipeEngine) calls() []pipeCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

func (e *pipeEngine) specs() []runner.Spec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.created)
}

// pipeIndex returns the index of the first call c in calls at or after
// from, or -1.
func pipeIndex(calls []pipeCall, from int, c pipeCall) int {
	for i := max(from, 0); i < len(calls); i++ {
		if calls[i] == c {
			return i
		}
	}
	return -1
}

// pipePusher is a fake imagePusher; a nil push returns one Push per ref.
type pipePusher struct {
	push   func(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error)
	upload func(ctx context.Context, refs []string) error
	// The registry beside the pushes: artifacts attached and tags, as a
	// registry would keep them.
	attached map[string][]byte // subject digest -> data
	tags     map[string]string // ref -> digest

	mu      sync.Mutex
	calls   []pipePushCall
	uploads [][]string
}

func (p *pipePusher) Upload(ctx context.Context, img v1.Image, refs []string) error {
	p.mu.Lock()
	p.uploads = append(p.uploads, slices.Clone(refs))
	p.mu.Unlock()
	if p.upload == nil {
		return nil
	}
	return p.upload(ctx, refs)
}

func (p *pipePusher) uploadCalls() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.uploads)
}

type pipePushCall struct {
	img      v1.Image
	refs     []string
	returned []gantry.Push
}

// pipeLines is a Reporter that writes its lines (and its progress, as
// lines) to w; the fake pusher's hooks write their progress to it as text.
type pipeLines struct{ w io.Writer }

func (l pipeLines) Linef(format string, args ...any) { fmt.Fprintf(l.w, format+"\n", args...) }
func (l pipeLines) Progress(p gantry.Progress) {
	fmt.Fprintf(l.w, "progress %s %d/%d\n", p.Ref, p.Current, p.Total)
}

// Write hands each line written to the reporter.
type reporterWriter struct{ rep gantry.Reporter }

func (r reporterWriter) Write(p []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if l = strings.TrimSuffix(l, "\n"); l != "" {
			r.rep.Linef("%s", l)
		}
	}
	return len(p), nil
}

func (p *pipePusher) Push(ctx context.Context, img v1.Image, refs []string, rep gantry.Reporter) ([]gantry.Push, error) {
	progress := reporterWriter{rep}
	var (
		pushes []gantry.Push
		err    error
	)
	if p.push == nil {
		pushes = pipePushes(refs)
		for _, d := range pushes { // as the registry client reports
			rep.Progress(gantry.Progress{Ref: d.Ref, Current: 1, Total: 2})
			rep.Progress(gantry.Progress{Ref: d.Ref, Current: 2, Total: 2, Digest: d.Digest})
		}
	} else {
		pushes, err = p.push(ctx, img, refs, progress)
	}
	p.mu.Lock()
	p.calls = append(p.calls, pipePushCall{img: img, refs: slices.Clone(refs), returned: slices.Clone(pushes)})
	p.mu.Unlock()
	return pushes, err
}

func (p *pipePusher) Attach(ctx context.Context, ref, subject, mediaType string, data []byte) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attached == nil {
		p.attached = map[string][]byte{}
	}
	p.attached[subject] = data
	return "sha256:artifact-of-" + subject, nil
}

func (p *pipePusher) AttachFiles(ctx context.Context, ref, subject, artifactType string, files map[string]v1.Layer) (string, error) {
	return "sha256:files-of-" + subject, nil
}

func (p *pipePusher) Attached(ctx context.Context, ref, subject, mediaType string) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.attached[subject]; ok {
		return d, nil
	}
	return nil, gantry.Errorf(gantry.ErrNotFound, "no artifact")
}

func (p *pipePusher) Resolve(ctx context.Context, ref string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.tags[ref]; ok {
		return d, nil
	}
	return "", gantry.Errorf(gantry.ErrNotFound, "no tag")
}

func (p *pipePusher) Tag(ctx context.Context, ref, digest string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tags == nil {
		p.tags = map[string]string{}
	}
	p.tags[ref] = digest
	return nil
}

func (p *pipePusher) pushCalls() []pipePushCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

func pipePushes(refs []string) []gantry.Push {
	var out []gantry.Push
	for i, r := range refs {
		out = append(out, gantry.Push{Ref: r, Digest: fmt.Sprintf("sha256:%064d", i+1)})
	}
	return out
}

// pipeSource is a fake imageSource: it hands out img for any name, or
// fails with err when it is set.
type pipeSource struct {
	img v1.Image
	err error
	// gone names answer ErrNotFound, as the engine does for an image
	// removed.
	gone map[string]bool

	mu    sync.Mutex
	names []string
}

func (s *pipeSource) read(ctx context.Context, name string) (v1.Image, error) {
	s.mu.Lock()
	s.names = append(s.names, name)
	s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.gone[name] {
		return nil, gantry.Errorf(gantry.ErrNotFound, "image %s: not in the engine", name)
	}
	return s.img, nil
}

func (s *pipeSource) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.names)
}

// pipeFakes are the outside systems a test daemon talks to.
type pipeFakes struct {
	builder *pipeBuilder
	engine  *pipeEngine
	pusher  *pipePusher
	source  *pipeSource
}

func pipeNewFakes(t *testing.T) pipeFakes {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatalf("random.Image: %v", err)
	}
	return pipeFakes{
		builder: &pipeBuilder{},
		engine:  &pipeEngine{},
		pusher:  &pipePusher{},
		source:  &pipeSource{img: img},
	}
}

// pipeCountingStore is the real store, counting the Gets made through it so
// that a test can tell when a follower has looked at a job.
type pipeCountingStore struct {
	*store.Store
	gets atomic.Int64
}

func (s *pipeCountingStore) Get(ctx context.Context, id string) (*gantry.Job, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

// pipeOpenStore opens the bbolt file at path; the caller closes it.
func pipeOpenStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatalf("store.Open(%s): %v", path, err)
	}
	return st
}

// pipeNewDaemon returns a daemon over st and f with its data in dataDir;
// opts change its configuration before New sees it.
func pipeNewDaemon(t *testing.T, dataDir string, maxJobs int, st jobStore, f pipeFakes, opts ...func(*Config)) *Daemon {
	t.Helper()
	cfg := Config{
		DataDir:     dataDir,
		Instance:    pipeInstance,
		MaxJobs:     maxJobs,
		Policy:      gantry.Policy{ContextBytes: 1 << 20, ContextEntries: 100},
		StopTimeout: time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := New(cfg, st, f.builder, f.engine, f.pusher, f.source.read)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// pipeRig is a daemon on a fresh data dir and store, not yet running.
type pipeRig struct {
	dir string
	st  *store.Store
	d   *Daemon
	f   pipeFakes
}

func pipeNewRig(t *testing.T, maxJobs int, f pipeFakes, opts ...func(*Config)) *pipeRig {
	t.Helper()
	dir := t.TempDir()
	st := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
	t.Cleanup(func() { st.Close() })
	return &pipeRig{dir: dir, st: st, d: pipeNewDaemon(t, dir, maxJobs, st, f, opts...), f: f}
}

// pipeRun runs d until the returned stop is called (or the test ends):
// stop cancels Run's context and waits for Run to return.
func pipeRun(t *testing.T, d *Daemon) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(pipeDeadline):
			t.Errorf("Run did not return %v after its context was cancelled", pipeDeadline)
		}
	})
	t.Cleanup(stop)
	return stop
}

// pipeResume readies d as gantryd does on start (Prepare) and runs it.
func pipeResume(t *testing.T, d *Daemon) (stop func()) {
	t.Helper()
	if err := d.Prepare(context.Background()); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return pipeRun(t, d)
}

// pipeTar returns a tar stream holding files (name to content).
func pipeTar(t *testing.T, files map[string]string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		hdr := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", n, err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			t.Fatalf("tar write %s: %v", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar close: %v", err)
	}
	return &buf
}

// pipeContext is the usual build context: a Dockerfile and a trainer.
func pipeContext() map[string]string {
	return map[string]string{"Dockerfile": pipeDockerfile, "train.py": "print('Model accuracy: 0.9667')\n"}
}

func pipeSubmit(t *testing.T, d *Daemon, spec gantry.Spec) *gantry.Job {
	t.Helper()
	j, err := d.Submit(context.Background(), spec, nil, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return j
}

// pipeEventually waits for cond, failing the test after pipeDeadline.
func pipeEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pipeDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", pipeDeadline, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pipeWait waits for job id to reach a terminal state and returns it.
func pipeWait(t *testing.T, d *Daemon, id string) *gantry.Job {
	t.Helper()
	var j *gantry.Job
	pipeEventually(t, "job "+id+" to end", func() bool {
		var err error
		j, err = d.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		return j.State.Terminal()
	})
	return j
}

// pipeReceive waits for a value on ch, failing the test after pipeDeadline.
func pipeReceive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(pipeDeadline):
		t.Fatalf("gave up after %v waiting for %s", pipeDeadline, what)
		var zero T
		return zero
	}
}

// pipeWriteChunks writes s to w a few bytes at a time, so that lines reach
// the daemon split across writes, as a container's output does.
func pipeWriteChunks(w io.Writer, s string) error {
	const chunk = 7
	for len(s) > 0 {
		n := min(chunk, len(s))
		if _, err := io.WriteString(w, s[:n]); err != nil {
			return err
		}
		s = s[n:]
	}
	return nil
}

// pipeReplay is a fake Run of a container that prints output and exits:
// like the engine, it replays the whole output from the start at each call.
func pipeReplay(output string, exit runner.Exit) func(context.Context, string, io.Writer) (runner.Exit, error) {
	return func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		if err := pipeWriteChunks(out, output); err != nil {
			return runner.Exit{}, err
		}
		return exit, nil
	}
}

// pipeBlock returns a fake phase that signals entered, then blocks until
// its context ends and hands the context's error and cause on to seen.
func pipeBlock(entered chan<- struct{}, seen chan<- [2]error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		select {
		case seen <- [2]error{ctx.Err(), context.Cause(ctx)}:
		default:
		}
		return ctx.Err()
	}
}

func pipeReadLog(t *testing.T, d *Daemon, id string) string {
	t.Helper()
	b, err := os.ReadFile(d.LogPath(id))
	if err != nil {
		t.Fatalf("read log of %s: %v", id, err)
	}
	return string(b)
}

// pipeLinesOnce checks that each line of output is in the log exactly once.
func pipeLinesOnce(t *testing.T, logText, output string) {
	t.Helper()
	for _, line := range strings.SplitAfter(output, "\n") {
		if line == "" {
			continue
		}
		if n := strings.Count(logText, line); n != 1 {
			t.Errorf("log holds %q %d times, want once; log:\n%s", line, n, logText)
		}
	}
}

// pipeRecord creates job j in st, moves it through states and then
// applies edit, all as a gantryd that stopped would have left it.
func pipeRecord(t *testing.T, st jobStore, j *gantry.Job, edit func(*gantry.Job), states ...gantry.State) *gantry.Job {
	t.Helper()
	ctx := context.Background()
	if _, err := st.Get(ctx, j.ID); errors.Is(err, gantry.ErrNotFound) {
		if err := st.Create(ctx, j); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	got, err := st.Update(ctx, j.ID, func(j *gantry.Job) error {
		for _, to := range states {
			if err := j.Move(to, time.Now()); err != nil {
				return err
			}
		}
		if edit != nil {
			edit(j)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("record job %s in %v: %v", j.ID, states, err)
	}
	return got
}

// pipeWriteFile writes content to path, failing the test on error.
func pipeWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func pipeFloat(v float64) *float64 { return &v }

func pipeInt(v int) *int { return &v }

func pipeFmtFloat(p *float64) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprint(*p)
}

func pipeFmtInt(p *int) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprint(*p)
}

func pipeJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// pipeExists reports whether path exists.
func pipeExists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat %s: %v", path, err)
	}
	return err == nil
}

func TestJobPipeline(t *testing.T) {
	refs := []string{"registry.example/iris:1", "registry.example/iris:latest"}
	const trained = "Epoch 1/3 loss=0.61\nEpoch 2/3 loss=0.33\nEpoch 3/3 loss=0.21\nModel accuracy: 0.9667\n"
	tests := []struct {
		name     string
		spec     gantry.Spec
		output   string // what the training container prints
		exit     runner.Exit
		buildErr error
		pushErr  error

		wantState   gantry.State
		wantErr     []string // substrings of the job's Error; none means Error is empty
		wantAcc     *float64
		wantAccErr  string // a part of Metrics.AccuracyError; "" means it is empty
		wantExit    *int   // nil when the container never ran to an exit
		wantGate    bool
		wantPushed  bool
		wantCleanup bool // the job failed after its container was created: it is stopped and removed again
	}{
		{
			name:      "success without push",
			output:    trained,
			wantState: gantry.StateSucceeded,
			wantAcc:   pipeFloat(0.9667),
			wantExit:  pipeInt(0),
			wantGate:  true,
		},
		{
			name:       "success with push to two refs",
			spec:       gantry.Spec{Push: refs},
			output:     trained,
			wantState:  gantry.StateSucceeded,
			wantAcc:    pipeFloat(0.9667),
			wantExit:   pipeInt(0),
			wantGate:   true,
			wantPushed: true,
		},
		{
			name:       "gate passed, pushed",
			spec:       gantry.Spec{Push: refs, MinAccuracy: pipeFloat(0.95)},
			output:     trained,
			wantState:  gantry.StateSucceeded,
			wantAcc:    pipeFloat(0.9667),
			wantExit:   pipeInt(0),
			wantGate:   true,
			wantPushed: true,
		},
		{
			name:        "non-zero exit",
			spec:        gantry.Spec{Push: refs},
			output:      "Epoch 1/3 loss=0.61\nTraceback (most recent call last):\nValueError: bad input\n",
			exit:        runner.Exit{Code: 3},
			wantState:   gantry.StateFailed,
			wantErr:     []string{"exited with code 3"},
			wantAccErr:  "no line of the training output reported accuracy",
			wantExit:    pipeInt(3),
			wantCleanup: true,
		},
		{
			name:        "out of memory",
			spec:        gantry.Spec{Push: refs},
			output:      "Epoch 1/3 loss=0.61\n",
			exit:        runner.Exit{Code: 137, OOMKilled: true},
			wantState:   gantry.StateFailed,
			wantErr:     []string{"out of memory"},
			wantAccErr:  "no line of the training output reported accuracy",
			wantExit:    pipeInt(137),
			wantCleanup: true,
		},
		{
			name:      "accuracy below the gate",
			spec:      gantry.Spec{Push: refs, MinAccuracy: pipeFloat(0.99)},
			output:    trained,
			wantState: gantry.StateRejected,
			wantErr:   []string{"0.9667", "0.99"},
			wantAcc:   pipeFloat(0.9667),
			wantExit:  pipeInt(0),
		},
		{
			name:       "gate set and no accuracy printed",
			spec:       gantry.Spec{Push: refs, MinAccuracy: pipeFloat(0.5)},
			output:     "Epoch 1/3 loss=0.61\ndone\n",
			wantState:  gantry.StateRejected,
			wantErr:    []string{"0.5", "no line of the training output reported accuracy"},
			wantAccErr: "no line of the training output reported accuracy",
			wantExit:   pipeInt(0),
		},
		{
			name:       "no gate and no accuracy",
			output:     "done\n",
			wantState:  gantry.StateSucceeded,
			wantAccErr: "no line of the training output reported accuracy",
			wantExit:   pipeInt(0),
			wantGate:   true,
		},
		{
			name:       "no gate and no accuracy, pushed",
			spec:       gantry.Spec{Push: refs},
			output:     "done\n",
			wantState:  gantry.StateSucceeded,
			wantAccErr: "no line of the training output reported accuracy",
			wantExit:   pipeInt(0),
			wantGate:   true,
			wantPushed: true,
		},
		{
			name:      "custom metric regex",
			spec:      gantry.Spec{MetricRegex: `score=(\d+\.\d+)`, MinAccuracy: pipeFloat(0.8)},
			output:    "Model accuracy: 0.10\nfinal score=0.8125\n",
			wantState: gantry.StateSucceeded,
			wantAcc:   pipeFloat(0.8125),
			wantExit:  pipeInt(0),
			wantGate:  true,
		},
		{
			name:      "last line without newline",
			output:    "Epoch 1/1\nModel accuracy: 0.9667",
			wantState: gantry.StateSucceeded,
			wantAcc:   pipeFloat(0.9667),
			wantExit:  pipeInt(0),
			wantGate:  true,
		},
		{
			// The later line is over maxLine: it is logged, not read.
			name:      "accuracy on an over-long line is not read",
			output:    trained + "Model accuracy: 0.10 " + strings.Repeat("x", maxLine) + "\n",
			wantState: gantry.StateSucceeded,
			wantAcc:   pipeFloat(0.9667),
			wantExit:  pipeInt(0),
			wantGate:  true,
		},
		{
			name:      "build failure",
			spec:      gantry.Spec{Push: refs},
			buildErr:  errors.New("build failed at step 2/2: COPY train.py /: file not found"),
			wantState: gantry.StateFailed,
			wantErr:   []string{"build failed at step 2/2: COPY train.py /: file not found"},
		},
		{
			name:        "push failure",
			spec:        gantry.Spec{Push: refs},
			output:      trained,
			pushErr:     errors.New("push registry.example/iris:1: unauthorized: authentication required"),
			wantState:   gantry.StateFailed,
			wantErr:     []string{"push registry.example/iris:1: unauthorized: authentication required"},
			wantAcc:     pipeFloat(0.9667),
			wantExit:    pipeInt(0),
			wantGate:    true,
			wantCleanup: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := pipeNewFakes(t)
			f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
				fmt.Fprint(progress, pipeProgress)
				if tc.buildErr != nil {
					return "", tc.buildErr
				}
				return pipeImageID(pipeJobOf(r)), nil
			}
			f.engine.run = pipeReplay(tc.output, tc.exit)
			f.pusher.push = func(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error) {
				fmt.Fprintf(progress, "pushing %d refs\n", len(refs))
				if tc.pushErr != nil {
					return nil, tc.pushErr
				}
				return pipePushes(refs), nil
			}
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)

			submitted := pipeSubmit(t, rig.d, tc.spec)
			id := submitted.ID
			j := pipeWait(t, rig.d, id)

			if j.State != tc.wantState {
				t.Errorf("state = %s (error %q), want %s", j.State, j.Error, tc.wantState)
			}
			if len(tc.wantErr) == 0 && j.Error != "" {
				t.Errorf("error = %q, want none", j.Error)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(j.Error, w) {
					t.Errorf("error = %q, want it to mention %q", j.Error, w)
				}
			}
			if !reflect.DeepEqual(j.Metrics.Accuracy, tc.wantAcc) {
				t.Errorf("accuracy = %s, want %s", pipeFmtFloat(j.Metrics.Accuracy), pipeFmtFloat(tc.wantAcc))
			}
			if got := j.Metrics.AccuracyError; (tc.wantAccErr == "") != (got == "") || !strings.Contains(got, tc.wantAccErr) {
				t.Errorf("accuracy error = %q, want %q", got, tc.wantAccErr)
			}
			if !reflect.DeepEqual(j.ExitCode, tc.wantExit) {
				t.Errorf("exit code = %s, want %s", pipeFmtInt(j.ExitCode), pipeFmtInt(tc.wantExit))
			}
			if j.GatePassed != tc.wantGate {
				t.Errorf("gate passed = %v, want %v", j.GatePassed, tc.wantGate)
			}
			if j.CancelRequested {
				t.Errorf("cancel requested = true, want false")
			}

			// The build: asked for the job's image, from the context sent.
			reqs, dockerfiles := f.builder.built()
			if len(reqs) != 1 {
				t.Fatalf("builder called %d times, want 1", len(reqs))
			}
			// No per-job or per-daemon label in the image's config: the
			// same inputs give the same image (reproducible images). The
			// container carries them.
			wantLabels := map[string]string{runner.LabelJob: id, runner.LabelDaemon: pipeInstance}
			if reqs[0].Name != j.ImageName || len(reqs[0].Labels) != 0 {
				t.Errorf("build request name %q labels %v, want name %q and no labels",
					reqs[0].Name, reqs[0].Labels, j.ImageName)
			}
			if dockerfiles[0] != pipeDockerfile {
				t.Errorf("builder found Dockerfile %q in the context, want %q", dockerfiles[0], pipeDockerfile)
			}
			if pipeExists(t, rig.d.contextDir(id)) {
				t.Errorf("context dir still there after the job ended, want it gone")
			}

			// The container: created from the image, recorded, run,
			// removed once the record was complete.
			created, ran, removed, stopped := f.engine.specs(), f.engine.args("run"), f.engine.args("remove"), f.engine.args("stop")
			if tc.buildErr != nil {
				if len(created) != 0 || len(ran) != 0 || len(removed) != 0 || len(stopped) != 0 {
					t.Errorf("after a failed build the engine saw %v, want no container calls", f.engine.calls())
				}
				if j.Image != "" || j.ContainerID != "" {
					t.Errorf("image %q container %q recorded after a failed build, want none", j.Image, j.ContainerID)
				}
			} else {
				if j.Image != pipeImageID(id) {
					t.Errorf("image = %q, want %q", j.Image, pipeImageID(id))
				}
				cid := pipeContainerID(id)
				if j.ContainerID != cid {
					t.Errorf("container ID = %q, want %q", j.ContainerID, cid)
				}
				if len(created) != 1 || created[0].Image != pipeImageID(id) || created[0].Name != containerName(id) || !maps.Equal(created[0].Labels, wantLabels) {
					t.Errorf("containers created %+v, want one named %s from image %s labelled %v", created, containerName(id), pipeImageID(id), wantLabels)
				}
				if !slices.Equal(ran, []string{cid}) {
					t.Errorf("containers run %v, want [%s]", ran, cid)
				}
				// A container left by a crash under the job's name goes first.
				wantRemoved := []string{containerName(id), cid}
				var wantStopped []string
				if tc.wantCleanup {
					wantRemoved = append(wantRemoved, cid)
					wantStopped = []string{cid}
				}
				if !slices.Equal(removed, wantRemoved) {
					t.Errorf("containers removed %v, want %v", removed, wantRemoved)
				}
				if !slices.Equal(stopped, wantStopped) {
					t.Errorf("containers stopped %v, want %v", stopped, wantStopped)
				}
			}
			if rmi := f.engine.args("rmi"); len(rmi) != 0 {
				t.Errorf("images removed %v, want none: only a canceled job loses its image", rmi)
			}

			// The push: only when asked and passed, of the image the
			// source gives for the job's name, to every ref.
			pushTried := tc.wantPushed || tc.pushErr != nil
			calls := f.pusher.pushCalls()
			if !pushTried {
				if len(calls) != 0 {
					t.Errorf("pusher called %d times, want never", len(calls))
				}
			} else {
				if len(calls) != 1 {
					t.Fatalf("pusher called %d times, want once", len(calls))
				}
				// The spec's refs, then the immutable job-<id> tag of each
				// repository.
				want := append(slices.Clone(tc.spec.Push), "registry.example/iris:job-"+j.ID)
				if !slices.Equal(calls[0].refs, want) {
					t.Errorf("pushed to %v, want %v", calls[0].refs, want)
				}
				if calls[0].img != f.source.img {
					t.Errorf("pushed an image other than the one the source gave")
				}
				// Asked once for the upload during training, once for
				// the push.
				if names := f.source.asked(); !slices.Equal(names, []string{j.ImageName, j.ImageName}) {
					t.Errorf("image source asked for %q, want [%q %q]", names, j.ImageName, j.ImageName)
				}
			}
			if tc.wantPushed {
				if !reflect.DeepEqual(j.Pushes, calls[0].returned) {
					t.Errorf("pushes recorded %v, want what the pusher returned %v", j.Pushes, calls[0].returned)
				}
			} else if len(j.Pushes) != 0 {
				t.Errorf("pushes = %v, want none", j.Pushes)
			}

			// The times of each phase, in order.
			tm := j.Times
			if tm.Build.Started == nil || tm.Finished == nil {
				t.Fatalf("build started %v, finished %v: want both set", tm.Build.Started, tm.Finished)
			}
			if tm.Build.Started.Before(tm.Created) {
				t.Errorf("build started %v before the job was created %v", tm.Build.Started, tm.Created)
			}
			last := *tm.Build.Started
			if tc.buildErr == nil {
				if tm.Run.Started == nil {
					t.Fatalf("run started not set")
				}
				if tm.Run.Started.Before(last) {
					t.Errorf("run started %v before the build started %v", tm.Run.Started, last)
				}
				last = *tm.Run.Started
			} else if tm.Run.Started != nil {
				t.Errorf("run started %v after a failed build, want unset", tm.Run.Started)
			}
			if pushTried {
				if tm.Push.Started == nil || tm.Push.Started.Before(last) {
					t.Errorf("push started %v, want set and not before %v", tm.Push.Started, last)
				} else {
					last = *tm.Push.Started
				}
			}
			if tm.Finished.Before(last) {
				t.Errorf("finished %v before the last phase started %v", tm.Finished, last)
			}

			// The log: build progress, the training marker, the training
			// output, then the push progress.
			logText := pipeReadLog(t, rig.d, id)
			at := strings.Index(logText, pipeProgress)
			if at < 0 {
				t.Fatalf("log does not hold the build progress %q:\n%.2000s", pipeProgress, logText)
			}
			if tc.buildErr == nil {
				marker := trainingMarker(pipeContainerID(id))
				m := strings.Index(logText, marker)
				if m < at {
					t.Errorf("log does not hold the training marker %q after the build progress:\n%.2000s", marker, logText)
				}
				if i := strings.Index(logText, tc.output); i < m+len(marker) {
					t.Errorf("log does not hold the training output after the marker:\n%.2000s", logText)
				}
			}
			if pushTried && !strings.Contains(logText, "pushing 3 refs\n") {
				t.Errorf("log does not hold the push progress:\n%.2000s", logText)
			}
			if tc.wantState != gantry.StateSucceeded && !strings.Contains(logText, j.Error) {
				t.Errorf("log of a %s job does not say why (%q):\n%.2000s", j.State, j.Error, logText)
			}
		})
	}
}

// TestMaxJobs submits two jobs at once and checks how many run together:
// whole jobs (build start to container exit) must not overlap beyond the
// limit, and jobs start in the order they were submitted.
func TestMaxJobs(t *testing.T) {
	tests := []struct {
		maxJobs int
		want    int // jobs that run at the same time
	}{
		{maxJobs: 1, want: 1},
		{maxJobs: 2, want: 2},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("max-jobs %d", tc.maxJobs), func(t *testing.T) {
			var (
				mu      sync.Mutex
				active  int
				most    int
				changed = make(chan struct{}, 10)
			)
			f := pipeNewFakes(t)
			f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
				mu.Lock()
				active++
				most = max(most, active)
				mu.Unlock()
				changed <- struct{}{}
				return pipeImageID(pipeJobOf(r)), nil
			}
			f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
				// Hold the slot until both jobs have been under way at
				// once. With one slot, where that must not happen, hold
				// it for a moment only: a window to catch an overlap in,
				// not a timing assertion.
				wait := time.After(pipeDeadline)
				if tc.want == 1 {
					wait = time.After(200 * time.Millisecond)
				}
			hold:
				for {
					mu.Lock()
					both := most >= 2
					mu.Unlock()
					if both {
						break
					}
					select {
					case <-changed:
					case <-wait:
						break hold
					case <-ctx.Done():
						return runner.Exit{}, ctx.Err()
					}
				}
				mu.Lock()
				active--
				mu.Unlock()
				fmt.Fprintln(out, "Model accuracy: 0.9")
				return runner.Exit{}, nil
			}
			rig := pipeNewRig(t, tc.maxJobs, f)
			first := pipeSubmit(t, rig.d, gantry.Spec{})
			second := pipeSubmit(t, rig.d, gantry.Spec{})
			pipeRun(t, rig.d)

			for _, id := range []string{first.ID, second.ID} {
				if j := pipeWait(t, rig.d, id); j.State != gantry.StateSucceeded {
					t.Errorf("job %s: state %s (%s), want succeeded", id, j.State, j.Error)
				}
			}
			mu.Lock()
			got := most
			mu.Unlock()
			if got != tc.want {
				t.Errorf("at most %d jobs ran at once, want %d", got, tc.want)
			}
			if tc.maxJobs == 1 {
				reqs, _ := f.builder.built()
				var order []string
				for _, r := range reqs {
					order = append(order, pipeJobOf(r))
				}
				if want := []string{first.ID, second.ID}; !slices.Equal(order, want) {
					t.Errorf("jobs built in order %v, want submission order %v", order, want)
				}
			}
		})
	}
}

func TestSubmitRefusesBadSpec(t *testing.T) {
	tests := []struct {
		name  string
		spec  gantry.Spec
		files map[string]string
	}{
		{
			name:  "bad push ref",
			spec:  gantry.Spec{Push: []string{"registry.example/iris:1", "Registry.Example/Has Space:1"}},
			files: pipeContext(),
		},
		{
			name:  "metric regex does not compile",
			spec:  gantry.Spec{MetricRegex: `score=(\d+`},
			files: pipeContext(),
		},
		{
			name:  "metric regex with two groups",
			spec:  gantry.Spec{MetricRegex: `(score)=(\d+)`},
			files: pipeContext(),
		},
		{
			name:  "no Dockerfile in the context",
			files: map[string]string{"train.py": "print(1)\n", "docker/Dockerfile": pipeDockerfile},
		},
		{
			name:  "no Dockerfile at the given path",
			spec:  gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "docker/Dockerfile.train"}},
			files: pipeContext(),
		},
		{
			name:  "empty tar stream",
			files: map[string]string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pipeNewFakes(t)
			rig := pipeNewRig(t, 1, f)
			ctx := context.Background()

			j, err := rig.d.Submit(ctx, tc.spec, nil, pipeTar(t, tc.files))
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Fatalf("Submit error = %v, want one of kind ErrInvalid", err)
			}
			if j != nil {
				t.Errorf("Submit returned job %+v with its error, want nil", j)
			}
			jobs, _, err := rig.d.List(ctx, gantry.JobFilter{})
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(jobs) != 0 {
				t.Errorf("store holds %d jobs after a refused submission, want 0", len(jobs))
			}
			entries, err := os.ReadDir(filepath.Join(rig.dir, "contexts"))
			if err != nil {
				t.Fatalf("read contexts dir: %v", err)
			}
			if len(entries) != 0 {
				t.Errorf("contexts dir holds %d entries after a refused submission, want none", len(entries))
			}
		})
	}
}

// TestShutdownLeavesJobsToResume stops gantryd while a job is in each phase:
// the job stays as it is, to be resumed by the next gantryd, and nothing of
// it is stopped or removed.
func TestShutdownLeavesJobsToResume(t *testing.T) {
	refs := []string{"registry.example/iris:1", "registry.example/iris:2"}
	for _, phase := range []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing} {
		t.Run(string(phase), func(t *testing.T) {
			t.Parallel()
			f := pipeNewFakes(t)
			entered := make(chan struct{}, 1)
			seen := make(chan [2]error, 1)
			block := pipeBlock(entered, seen)
			pipeBlockIn(f, phase, pipeProgress, block)
			rig := pipeNewRig(t, 1, f)
			stop := pipeRun(t, rig.d)
			j := pipeSubmit(t, rig.d, gantry.Spec{Push: refs})
			pipeReceive(t, "the job to be "+string(phase), entered)
			stop()

			if errs := pipeReceive(t, "the phase to end", seen); !errors.Is(errs[1], context.Canceled) {
				t.Errorf("the %s phase's context ended with cause %v, want context.Canceled", phase, errs[1])
			}
			got, err := rig.d.Get(context.Background(), j.ID)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got.State != phase || got.Error != "" || got.CancelRequested {
				t.Errorf("after the shutdown: state %s, error %q, cancel requested %v; want %s, no error, no cancel",
					got.State, got.Error, got.CancelRequested, phase)
			}
			cid := pipeContainerID(j.ID)
			for _, c := range f.engine.calls() {
				// (A job pushing removed its container when training ended.)
				if c.op == "stop" || c.op == "rmi" || (c.op == "remove" && c.arg == cid && phase != gantry.StatePushing) {
					t.Errorf("engine call %q on shutdown: the job's container and image must be left for the next gantryd", c)
				}
			}
			switch phase {
			case gantry.StateBuilding:
				if !pipeExists(t, rig.d.contextDir(j.ID)) {
					t.Errorf("the build context of a job left building is gone: the next gantryd cannot build it")
				}
			case gantry.StatePushing:
				if want := pipePushes(refs[:1]); !reflect.DeepEqual(got.Pushes, want) {
					t.Errorf("pushes = %v, want the one done before the shutdown %v", got.Pushes, want)
				}
			}
			if logText := pipeReadLog(t, rig.d, j.ID); !strings.HasSuffix(logText, "==> gantryd stopped; the job goes on when it starts again\n") {
				t.Errorf("log does not end saying gantryd stopped:\n%s", logText)
			}
		})
	}
}

// TestRestart stops a daemon with a job done, one training and one queued,
// and starts a new daemon on the same files: the training job is
// re-attached and its log holds each line once, the queued one runs once,
// the one done is as it was.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "gantry.db")
	ctx := context.Background()
	const (
		sofar  = "Epoch 1/3 loss=0.61\nEpoch 2/3 loss=0.33\n"
		output = sofar + "Epoch 3/3 loss=0.21\nModel accuracy: 0.9667\n"
	)

	// The first daemon: one slot. Job "done" runs to the end; job
	// "interrupted" trains until gantryd stops; job "queued" waits.
	f1 := pipeNewFakes(t)
	var runs atomic.Int64
	f1.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		if runs.Add(1) == 2 { // the second job trains until gantryd stops
			if err := pipeWriteChunks(out, sofar); err != nil {
				return runner.Exit{}, err
			}
			<-ctx.Done()
			return runner.Exit{}, ctx.Err()
		}
		return runner.Exit{}, pipeWriteChunks(out, output)
	}
	st1 := pipeOpenStore(t, dbPath)
	d1 := pipeNewDaemon(t, dir, 1, st1, f1)
	stop1 := pipeResume(t, d1)

	done := pipeSubmit(t, d1, gantry.Spec{})
	if j := pipeWait(t, d1, done.ID); j.State != gantry.StateSucceeded {
		t.Fatalf("job done: state %s (%s), want succeeded", j.State, j.Error)
	}
	interrupted := pipeSubmit(t, d1, gantry.Spec{})
	pipeEventually(t, "the second job to train", func() bool {
		b, err := os.ReadFile(d1.LogPath(interrupted.ID))
		return err == nil && strings.Contains(string(b), sofar)
	})
	queued := pipeSubmit(t, d1, gantry.Spec{MinAccuracy: pipeFloat(0.9)})
	stop1()

	cid := pipeContainerID(interrupted.ID)
	if j, err := st1.Get(ctx, interrupted.ID); err != nil {
		t.Fatalf("Get: %v", err)
	} else if j.State != gantry.StateRunning || j.ContainerID != cid || j.ExitCode != nil {
		t.Errorf("job interrupted by the shutdown: state %s, container %q, exit %s; want running in %s, no exit",
			j.State, j.ContainerID, pipeFmtInt(j.ExitCode), cid)
	}
	if stopped := f1.engine.args("stop"); len(stopped) != 0 {
		t.Errorf("containers stopped on shutdown %v, want none: training goes on while gantryd is away", stopped)
	}
	if j, err := st1.Get(ctx, queued.ID); err != nil || j.State != gantry.StateQueued {
		t.Fatalf("job queued behind the slot: %+v, %v; want it still queued", j, err)
	}
	before, _, err := st1.List(ctx, gantry.JobFilter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(before) != 3 {
		t.Fatalf("List before the restart: %d jobs, want 3", len(before))
	}
	if err := st1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The second daemon, on the same files. The engine replays the
	// container's whole log, as a real one does.
	f2 := pipeNewFakes(t)
	f2.engine.run = pipeReplay(output, runner.Exit{})
	st2 := pipeOpenStore(t, dbPath)
	t.Cleanup(func() { st2.Close() })
	d2 := pipeNewDaemon(t, dir, 1, st2, f2)
	after, _, err := d2.List(ctx, gantry.JobFilter{})
	if err != nil {
		t.Fatalf("List after reopening: %v", err)
	}
	if !reflect.DeepEqual(after, before) {
		t.Errorf("List after reopening differs:\n got %s\nwant %s", pipeJSON(after), pipeJSON(before))
	}
	pipeResume(t, d2)

	j := pipeWait(t, d2, interrupted.ID)
	if j.State != gantry.StateSucceeded || j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 0.9667 || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("interrupted job after the restart: state %s (%q), accuracy %s, exit %s; want succeeded with 0.9667, exit 0",
			j.State, j.Error, pipeFmtFloat(j.Metrics.Accuracy), pipeFmtInt(j.ExitCode))
	}
	logText := pipeReadLog(t, d2, interrupted.ID)
	pipeLinesOnce(t, logText, output)
	pipeLinesOnce(t, logText, pipeProgress+trainingMarker(cid))
	if strings.Contains(logText, "gantryd stopped") {
		t.Errorf("log of the re-attached job still says gantryd stopped (it came after the marker):\n%s", logText)
	}

	j = pipeWait(t, d2, queued.ID)
	if j.State != gantry.StateSucceeded || j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 0.9667 {
		t.Errorf("queued job after the restart: state %s (%q), accuracy %s; want succeeded with 0.9667",
			j.State, j.Error, pipeFmtFloat(j.Metrics.Accuracy))
	}
	if _, dockerfiles := f2.builder.built(); !slices.Equal(dockerfiles, []string{pipeDockerfile}) {
		t.Errorf("after the restart the builder found Dockerfiles %q, want the queued job's context only", dockerfiles)
	}
	if ran, want := f2.engine.args("run"), []string{cid, pipeContainerID(queued.ID)}; !slices.Equal(ran, want) {
		t.Errorf("containers run after the restart %v, want %v", ran, want)
	}

	// The job that had ended is as it was.
	now, err := d2.Get(ctx, done.ID)
	if err != nil {
		t.Fatalf("Get(%s): %v", done.ID, err)
	}
	for _, old := range before {
		if old.ID == done.ID && !reflect.DeepEqual(now, old) {
			t.Errorf("job %s changed across the restart:\n got %s\nwant %s", old.ID, pipeJSON(now), pipeJSON(old))
		}
	}
}

// TestResume starts a daemon on records as a gantryd that stopped in each
// state leaves them, and checks it goes on from there.
func TestResume(t *testing.T) {
	const (
		sofar   = "Epoch 1/3 loss=0.61\n"
		output  = sofar + "Epoch 2/3 loss=0.33\nEpoch 3/3 loss=0.21\nModel accuracy: 0.9667\n"
		stopped = "==> gantryd stopped; the job goes on when it starts again\n"
	)
	refs := []string{"registry.example/iris:1", "registry.example/iris:latest"}
	built := func(j *gantry.Job) { j.Image = pipeImageID(j.ID) }
	created := func(j *gantry.Job) { built(j); j.ContainerID = pipeContainerID(j.ID) }
	exited := func(j *gantry.Job) {
		created(j)
		j.ExitCode = pipeInt(0)
		j.Metrics.Accuracy = pipeFloat(0.9667)
		j.GatePassed = true
	}
	// The log a job left training has: the build, the marker, part of the
	// training output, and the line gantryd wrote as it stopped.
	trainingLog := func(id string) string {
		return pipeProgress + trainingMarker(pipeContainerID(id)) + sofar + stopped
	}
	tests := []struct {
		name   string
		spec   gantry.Spec
		states []gantry.State      // how far the job got
		edit   func(*gantry.Job)   // what was recorded on the way
		log    func(string) string // the log it left, by job ID; nil for none

		wantLog     func(string) string // the log after Prepare; nil when it is as left
		wantContext bool                // the build context is kept by Prepare
		wantState   gantry.State
		wantBuilds  int
		wantCreate  bool // a container is created (from the job's image)
		wantRuns    int
		wantPushes  []gantry.Push
		wantOutput  string // in the log exactly once per line at the end
	}{
		{
			name:        "queued",
			wantContext: true,
			wantState:   gantry.StateSucceeded,
			wantBuilds:  1, wantCreate: true, wantRuns: 1,
			wantOutput: output,
		},
		{
			name:        "building without an image is built again",
			states:      []gantry.State{gantry.StateBuilding},
			log:         func(string) string { return "#1 [internal] load build definition\n" + stopped },
			wantContext: true,
			wantState:   gantry.StateSucceeded,
			wantBuilds:  1, wantCreate: true, wantRuns: 1,
			wantOutput: output,
		},
		{
			name:       "building with an image recorded is not built again",
			states:     []gantry.State{gantry.StateBuilding},
			edit:       built,
			log:        func(string) string { return pipeProgress },
			wantState:  gantry.StateSucceeded,
			wantCreate: true, wantRuns: 1,
			wantOutput: output,
		},
		{
			name:       "running is re-attached",
			states:     []gantry.State{gantry.StateBuilding, gantry.StateRunning},
			edit:       created,
			log:        trainingLog,
			wantLog:    func(id string) string { return pipeProgress + trainingMarker(pipeContainerID(id)) },
			wantState:  gantry.StateSucceeded,
			wantRuns:   1,
			wantOutput: output,
		},
		{
			name:       "running without the marker in its log is re-attached",
			states:     []gantry.State{gantry.StateBuilding, gantry.StateRunning},
			edit:       created,
			log:        func(string) string { return "#1 DONE" },
			wantLog:    func(id string) string { return "#1 DONE\n" + trainingMarker(pipeContainerID(id)) },
			wantState:  gantry.StateSucceeded,
			wantRuns:   1,
			wantOutput: output,
		},
		{
			name:   "running with the exit recorded is not run again",
			states: []gantry.State{gantry.StateBuilding, gantry.StateRunning},
			edit:   exited,
			log: func(id string) string {
				return pipeProgress + trainingMarker(pipeContainerID(id)) + output + stopped
			},
			wantState:  gantry.StateSucceeded,
			wantOutput: output,
		},
		{
			name:       "pushing is pushed again",
			spec:       gantry.Spec{Push: refs},
			states:     []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing},
			edit:       exited,
			wantState:  gantry.StateSucceeded,
			wantPushes: pipePushes(refs),
		},
		{
			name:   "cancel requested while running ends canceled",
			states: []gantry.State{gantry.StateBuilding, gantry.StateRunning},
			edit: func(j *gantry.Job) {
				created(j)
				j.CancelRequested = true
			},
			log:       trainingLog,
			wantLog:   func(id string) string { return pipeProgress + trainingMarker(pipeContainerID(id)) },
			wantState: gantry.StateCanceled,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dir := t.TempDir()
			st := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
			t.Cleanup(func() { st.Close() })

			// What the gantryd that stopped left: submitted through it
			// (so the build context is there), then moved on.
			j := pipeSubmit(t, pipeNewDaemon(t, dir, 1, st, pipeNewFakes(t)), tc.spec)
			j = pipeRecord(t, st, j, tc.edit, tc.states...)
			f := pipeNewFakes(t)
			f.engine.run = pipeReplay(output, runner.Exit{})
			d := pipeNewDaemon(t, dir, 1, st, f)
			if tc.log != nil {
				pipeWriteFile(t, d.LogPath(j.ID), tc.log(j.ID))
			}

			if err := d.Prepare(ctx); err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if tc.log != nil {
				want := tc.log(j.ID)
				if tc.wantLog != nil {
					want = tc.wantLog(j.ID)
				}
				if got := pipeReadLog(t, d, j.ID); got != want {
					t.Errorf("log after Prepare:\n%q\nwant\n%q", got, want)
				}
			}
			if got := pipeExists(t, d.contextDir(j.ID)); got != tc.wantContext {
				t.Errorf("build context kept by Prepare: %v, want %v", got, tc.wantContext)
			}
			pipeRun(t, d)
			end := pipeWait(t, d, j.ID)

			if end.State != tc.wantState {
				t.Errorf("state = %s (%q), want %s", end.State, end.Error, tc.wantState)
			}
			if reqs, _ := f.builder.built(); len(reqs) != tc.wantBuilds {
				t.Errorf("builds = %d, want %d", len(reqs), tc.wantBuilds)
			}
			specs := f.engine.specs()
			switch {
			case !tc.wantCreate && len(specs) != 0:
				t.Errorf("containers created %+v, want none", specs)
			case tc.wantCreate && (len(specs) != 1 || specs[0].Image != pipeImageID(j.ID)):
				t.Errorf("containers created %+v, want one from image %s", specs, pipeImageID(j.ID))
			}
			if ran := f.engine.args("run"); len(ran) != tc.wantRuns {
				t.Errorf("containers run %v, want %d runs", ran, tc.wantRuns)
			}
			wantPushes := tc.wantPushes
			if wantPushes != nil { // and the job-<id> tag, pushed last
				var refs []string
				for _, p := range wantPushes {
					refs = append(refs, p.Ref)
				}
				wantPushes = pipePushes(append(refs, "registry.example/iris:job-"+j.ID))
			}
			if !reflect.DeepEqual(end.Pushes, wantPushes) {
				t.Errorf("pushes = %v, want %v", end.Pushes, wantPushes)
			}
			if tc.wantState == gantry.StateSucceeded && (end.Metrics.Accuracy == nil || *end.Metrics.Accuracy != 0.9667) {
				t.Errorf("accuracy = %s, want 0.9667", pipeFmtFloat(end.Metrics.Accuracy))
			}
			if tc.wantOutput != "" {
				pipeLinesOnce(t, pipeReadLog(t, d, j.ID), tc.wantOutput)
			}
			if tc.wantState == gantry.StateCanceled {
				cid := pipeContainerID(j.ID)
				calls := f.engine.calls()
				stop := pipeIndex(calls, 0, pipeCall{"stop", cid})
				if stop < 0 || pipeIndex(calls, stop, pipeCall{"remove", cid}) < 0 {
					t.Errorf("engine calls %v, want the container %s stopped, then removed", calls, cid)
				}
				if rmi := f.engine.args("rmi"); !slices.Equal(rmi, []string{j.ImageName}) {
					t.Errorf("images removed %v, want [%s]", rmi, j.ImageName)
				}
			}
			if pipeExists(t, d.contextDir(j.ID)) {
				t.Errorf("build context still there after the job ended")
			}
		})
	}
}

// TestShutdownAsTheContainerExits stops gantryd just as a container exits
// 0: the daemon's context is cancelled before Run returns its clean exit.
// The exit cannot be recorded then; the next gantryd re-attaches to the
// exited container and records it.
func TestShutdownAsTheContainerExits(t *testing.T) {
	const output = "Epoch 1/1\nModel accuracy: 0.9667\n"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := pipeNewFakes(t)
	f.engine.run = func(_ context.Context, id string, out io.Writer) (runner.Exit, error) {
		fmt.Fprint(out, output)
		cancel() // gantryd is told to stop as the container exits
		return runner.Exit{Code: 0}, nil
	}
	rig := pipeNewRig(t, 1, f)
	j := pipeSubmit(t, rig.d, gantry.Spec{})
	done := make(chan error, 1)
	go func() { done <- rig.d.Run(ctx) }()
	if err := pipeReceive(t, "Run to return after its context was cancelled", done); err != nil {
		t.Fatalf("Run: %v", err)
	}

	got, err := rig.d.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.State.Terminal() && (got.State != gantry.StateSucceeded || got.ExitCode == nil || *got.ExitCode != 0) {
		t.Fatalf("state %s, exit code %s after gantryd stopped: want the job left to resume, or succeeded with exit 0",
			got.State, pipeFmtInt(got.ExitCode))
	}

	f2 := pipeNewFakes(t)
	f2.engine.run = pipeReplay(output, runner.Exit{})
	d2 := pipeNewDaemon(t, rig.dir, 1, rig.st, f2)
	pipeResume(t, d2)
	got = pipeWait(t, d2, j.ID)
	if got.State != gantry.StateSucceeded || got.ExitCode == nil || *got.ExitCode != 0 {
		t.Errorf("after the restart: state %s (%q), exit code %s; want succeeded with exit 0", got.State, got.Error, pipeFmtInt(got.ExitCode))
	}
	pipeLinesOnce(t, pipeReadLog(t, d2, j.ID), output)
	if removed := f2.engine.args("remove"); !slices.Contains(removed, pipeContainerID(j.ID)) {
		t.Errorf("containers removed %v, want %s among them", removed, pipeContainerID(j.ID))
	}
}

// TestPrepare checks what Prepare does to the build contexts left behind.
func TestPrepare(t *testing.T) {
	ctx := context.Background()
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	built := func(j *gantry.Job) { j.Image = pipeImageID(j.ID) }
	tests := []struct {
		name   string
		states []gantry.State
		edit   func(*gantry.Job)
		keep   bool
	}{
		{name: "queued", keep: true},
		{name: "building without an image", states: []gantry.State{gantry.StateBuilding}, keep: true},
		{name: "building with an image", states: []gantry.State{gantry.StateBuilding}, edit: built},
		{name: "running", states: []gantry.State{gantry.StateBuilding, gantry.StateRunning}, edit: built},
		{name: "failed", states: []gantry.State{gantry.StateBuilding, gantry.StateFailed}},
		{name: "canceled", states: []gantry.State{gantry.StateCanceled}},
	}
	ids := make([]string, len(tests))
	for i, tc := range tests {
		j := pipeSubmit(t, rig.d, gantry.Spec{})
		pipeRecord(t, rig.st, j, tc.edit, tc.states...)
		ids[i] = j.ID
	}
	stray := filepath.Join(rig.dir, "contexts", "not-a-job")
	if err := os.Mkdir(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(rig.dir, "contexts", gantry.NewID(time.Now()))
	if err := os.Mkdir(unknown, 0o700); err != nil {
		t.Fatal(err)
	}

	if err := rig.d.Prepare(ctx); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	for i, tc := range tests {
		if got := pipeExists(t, rig.d.contextDir(ids[i])); got != tc.keep {
			t.Errorf("%s: build context kept %v, want %v", tc.name, got, tc.keep)
		}
	}
	for _, p := range []string{stray, unknown} {
		if pipeExists(t, p) {
			t.Errorf("%s kept, want a directory no job needs removed", p)
		}
	}
}

// A training program that prints the training marker's text, even with a
// raw record separator before it, does not move the point recovery cuts
// the log back to: after a restart the log ends at gantryd's own marker.
func TestRecoveryCutIgnoresForgedMarkers(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "gantry.db")
	f := pipeNewFakes(t)
	wrote := make(chan string, 1)
	f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		marker := strings.TrimPrefix(trainingMarker(id), "\x1e")
		forged := "Epoch 1/3\n" + marker + "forged 1\n\x1e" + marker + "forged 2\n\x1e==> succeeded\n"
		if err := pipeWriteChunks(out, forged); err != nil {
			return runner.Exit{}, err
		}
		wrote <- id
		<-ctx.Done() // trains on until gantryd stops
		return runner.Exit{}, ctx.Err()
	}
	st1 := pipeOpenStore(t, dbPath)
	d1 := pipeNewDaemon(t, dir, 1, st1, f)
	stop := pipeResume(t, d1)
	j := pipeSubmit(t, d1, gantry.Spec{})
	cid := pipeReceive(t, "the forged output to be written", wrote)
	stop()
	if err := st1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	before := pipeReadLog(t, d1, j.ID)
	if !strings.Contains(before, "forged 2") {
		t.Fatalf("the log does not hold the training output:\n%q", before)
	}

	st2 := pipeOpenStore(t, dbPath)
	t.Cleanup(func() { st2.Close() })
	d2 := pipeNewDaemon(t, dir, 1, st2, pipeNewFakes(t))
	if err := d2.Prepare(context.Background()); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	after := pipeReadLog(t, d2, j.ID)
	if !strings.HasSuffix(after, trainingMarker(cid)) || strings.Contains(after, "Epoch 1/3") || strings.Contains(after, "forged") {
		t.Errorf("log after Prepare\n%q\nwant it cut right after gantryd's marker %q, before any training output", after, trainingMarker(cid))
	}
	if n := strings.Count(after, "training in container"); n != 1 {
		t.Errorf("log after Prepare holds the marker's text %d times, want once:\n%q", n, after)
	}
}

func TestCutLog(t *testing.T) {
	marker := trainingMarker("0123456789ab")
	tests := []struct {
		name string
		log  *string // nil: no file
		want string
	}{
		{
			name: "marker present: cut right after it",
			log:  new(pipeProgress + marker + "Epoch 1/3\nEpoch 2\n==> gantryd stopped\n"),
			want: pipeProgress + marker,
		},
		{
			name: "marker last: nothing cut",
			log:  new(pipeProgress + marker),
			want: pipeProgress + marker,
		},
		{
			name: "marker twice: cut after the last",
			log:  new("a\n" + marker + "b\n" + marker + "c\n"),
			want: "a\n" + marker + "b\n" + marker,
		},
		{
			name: "no marker, ends with a newline: appended",
			log:  new(pipeProgress),
			want: pipeProgress + marker,
		},
		{
			name: "no marker, no newline at the end: a newline, then the marker",
			log:  new("#5 DONE"),
			want: "#5 DONE\n" + marker,
		},
		{
			name: "empty log",
			log:  new(""),
			want: marker,
		},
		{
			name: "no log",
			want: marker,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "job.log")
			if tc.log != nil {
				pipeWriteFile(t, path, *tc.log)
			}
			if err := cutLog(path, marker); err != nil {
				t.Fatalf("cutLog: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("log after cutLog:\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// pipeSyncBuffer is a bytes.Buffer safe to write from Logs and read from
// the test at the same time.
type pipeSyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *pipeSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *pipeSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pipeLogs calls Logs in a goroutine and returns a channel that gets its
// result.
func pipeLogs(ctx context.Context, d *Daemon, id string, follow bool, w io.Writer) <-chan error {
	res := make(chan error, 1)
	go func() { res <- d.Logs(ctx, id, follow, w) }()
	return res
}

func pipeResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(pipeDeadline):
		t.Fatalf("Logs did not return within %v", pipeDeadline)
		return nil
	}
}

func TestLogs(t *testing.T) {
	const output = "Epoch 1/3 loss=0.61\nModel accuracy: 0.9667\n"
	newRig := func(t *testing.T, release <-chan struct{}) (*pipeRig, *pipeCountingStore) {
		f := pipeNewFakes(t)
		f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
			fmt.Fprint(progress, pipeProgress)
			select {
			case <-release:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			return pipeImageID(pipeJobOf(r)), nil
		}
		f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
			return runner.Exit{}, pipeWriteChunks(out, output)
		}
		dir := t.TempDir()
		st := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
		t.Cleanup(func() { st.Close() })
		cs := &pipeCountingStore{Store: st}
		return &pipeRig{dir: dir, st: st, d: pipeNewDaemon(t, dir, 1, cs, f), f: f}, cs
	}

	t.Run("follow a queued job to its end", func(t *testing.T) {
		release := make(chan struct{})
		rig, cs := newRig(t, release)
		j := pipeSubmit(t, rig.d, gantry.Spec{})

		var got pipeSyncBuffer
		gets := cs.gets.Load()
		res := pipeLogs(context.Background(), rig.d, j.ID, true, &got)
		// Two Gets: the job exists, and it is still queued (nothing runs
		// it yet), so Logs must wait.
		pipeEventually(t, "Logs to look at the queued job", func() bool { return cs.gets.Load() >= gets+2 })
		pipeRun(t, rig.d)

		// The build is held: Logs must be following a job under way.
		var (
			early    error
			returned bool
		)
		pipeEventually(t, "Logs to pass on the build progress", func() bool {
			select {
			case early = <-res:
				returned = true
				return true
			default:
			}
			return strings.Contains(got.String(), pipeProgress)
		})
		if !returned {
			select {
			case early = <-res:
				returned = true
			default:
			}
		}
		if returned {
			t.Fatalf("Logs returned %v (having written %q) while the job was building, want it to follow", early, got.String())
		}
		close(release)

		if err := pipeResult(t, res); err != nil {
			t.Fatalf("Logs: %v", err)
		}
		end, err := rig.d.Get(context.Background(), j.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if end.State != gantry.StateSucceeded {
			t.Errorf("job state %s (%q) after Logs returned, want succeeded", end.State, end.Error)
		}
		if want := pipeReadLog(t, rig.d, j.ID); got.String() != want {
			t.Errorf("Logs wrote\n%q\nwant the whole log\n%q", got.String(), want)
		}
		if !strings.Contains(got.String(), output) {
			t.Errorf("Logs wrote %q, want it to hold the training output %q", got.String(), output)
		}
	})

	t.Run("without follow, a queued job", func(t *testing.T) {
		rig, _ := newRig(t, nil)
		j := pipeSubmit(t, rig.d, gantry.Spec{}) // the daemon is not running: it stays queued
		var got pipeSyncBuffer
		if err := pipeResult(t, pipeLogs(context.Background(), rig.d, j.ID, false, &got)); err != nil {
			t.Fatalf("Logs: %v", err)
		}
		if got.String() != "" {
			t.Errorf("Logs wrote %q for a job that has not started, want nothing", got.String())
		}
	})

	t.Run("without follow, a finished job", func(t *testing.T) {
		release := make(chan struct{})
		close(release)
		rig, _ := newRig(t, release)
		pipeRun(t, rig.d)
		j := pipeSubmit(t, rig.d, gantry.Spec{})
		pipeWait(t, rig.d, j.ID)
		var got pipeSyncBuffer
		if err := pipeResult(t, pipeLogs(context.Background(), rig.d, j.ID, false, &got)); err != nil {
			t.Fatalf("Logs: %v", err)
		}
		if want := pipeReadLog(t, rig.d, j.ID); got.String() != want || !strings.Contains(want, output) {
			t.Errorf("Logs wrote\n%q\nwant the whole log, with the training output\n%q", got.String(), want)
		}
	})

	t.Run("follow ends with its context", func(t *testing.T) {
		rig, _ := newRig(t, nil)
		j := pipeSubmit(t, rig.d, gantry.Spec{})
		ctx, cancel := context.WithCancel(context.Background())
		res := pipeLogs(ctx, rig.d, j.ID, true, io.Discard)
		cancel()
		if err := pipeResult(t, res); !errors.Is(err, context.Canceled) {
			t.Errorf("Logs after its context ended = %v, want context.Canceled", err)
		}
	})

	t.Run("unknown job", func(t *testing.T) {
		rig, _ := newRig(t, nil)
		id := gantry.NewID(time.Now())
		err := pipeResult(t, pipeLogs(context.Background(), rig.d, id, true, io.Discard))
		if !errors.Is(err, gantry.ErrNotFound) {
			t.Errorf("Logs of an unknown job = %v, want ErrNotFound", err)
		}
	})
}

func TestLineSplitter(t *testing.T) {
	long := strings.Repeat("x", maxLine+1)
	exact := strings.Repeat("y", maxLine)
	tests := []struct {
		name   string
		writes []string
		flush  bool
		want   []string
	}{
		{
			name:   "lines in one write",
			writes: []string{"a\nb\n"},
			want:   []string{"a", "b"},
		},
		{
			name:   "line split across writes",
			writes: []string{"Model acc", "uracy: 0.9", "667\nnext", "\n"},
			want:   []string{"Model accuracy: 0.9667", "next"},
		},
		{
			name:   "last line without newline waits for Flush",
			writes: []string{"a\nlast"},
			want:   []string{"a"},
		},
		{
			name:   "Flush delivers the last line without newline",
			writes: []string{"a\nla", "st"},
			flush:  true,
			want:   []string{"a", "last"},
		},
		{
			name:   "Flush with nothing pending delivers nothing",
			writes: []string{"a\n"},
			flush:  true,
			want:   []string{"a"},
		},
		{
			name:   "a line of exactly maxLine is delivered",
			writes: []string{exact + "\n"},
			want:   []string{exact},
		},
		{
			name:   "an over-long line is dropped, the next is delivered",
			writes: []string{long + "\naccuracy: 0.5\n"},
			want:   []string{"accuracy: 0.5"},
		},
		{
			name:   "an over-long line across writes is dropped",
			writes: []string{"first\n" + long[:maxLine/2], long[maxLine/2:], "tail\nnext\n"},
			want:   []string{"first", "next"},
		},
		{
			name:   "an over-long last line is not delivered by Flush",
			writes: []string{"a\n", long},
			flush:  true,
			want:   []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			l := iox.NewLineSplitter(maxLine, func(s string) { got = append(got, s) })
			for _, w := range tc.writes {
				n, err := l.Write([]byte(w))
				if n != len(w) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v; want %d, nil", len(w), n, err, len(w))
				}
			}
			if tc.flush {
				l.Flush()
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("lines = %q, want %q", pipeShort(got), pipeShort(tc.want))
			}
		})
	}

	// After an over-long line ends, the splitter is as new.
	var got []string
	l := iox.NewLineSplitter(maxLine, func(s string) { got = append(got, s) })
	l.Write([]byte(long))
	l.Flush()
	l.Write([]byte("after\n"))
	if want := []string{"after"}; !slices.Equal(got, want) {
		t.Errorf("after an over-long flushed line: lines = %q, want %q", pipeShort(got), want)
	}
}

// pipeShort shortens long lines for a readable failure message.
func pipeShort(lines []string) []string {
	out := make([]string, len(lines))
	for i, s := range lines {
		if len(s) > 40 {
			s = fmt.Sprintf("%s...(%d bytes)", s[:20], len(s))
		}
		out[i] = s
	}
	return out
}

func TestCancelQueued(t *testing.T) {
	ctx := context.Background()
	f := pipeNewFakes(t)
	rig := pipeNewRig(t, 1, f)
	j := pipeSubmit(t, rig.d, gantry.Spec{}) // the daemon is not running: it stays queued

	got, err := rig.d.Cancel(ctx, j.ID)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if got.State != gantry.StateCanceled || got.Error != errCanceled.Error() || !got.CancelRequested || got.Times.Finished == nil {
		t.Errorf("Cancel returned state %s, error %q, cancel requested %v, finished %v; want canceled at once, saying %q",
			got.State, got.Error, got.CancelRequested, got.Times.Finished, errCanceled)
	}
	if stored, err := rig.d.Get(ctx, j.ID); err != nil || !reflect.DeepEqual(stored, got) {
		t.Errorf("stored record %s, %v; want what Cancel returned %s", pipeJSON(stored), err, pipeJSON(got))
	}
	if pipeExists(t, rig.d.contextDir(j.ID)) {
		t.Errorf("build context of a canceled queued job is still there")
	}
	again, err := rig.d.Cancel(ctx, j.ID)
	if err != nil || again.State != gantry.StateCanceled {
		t.Errorf("second Cancel = %v, %v; want the canceled job, no error", again, err)
	}

	// Once the daemon runs, the canceled job is not built.
	pipeRun(t, rig.d)
	other := pipeSubmit(t, rig.d, gantry.Spec{})
	pipeWait(t, rig.d, other.ID)
	var order []string
	reqs, _ := f.builder.built()
	for _, r := range reqs {
		order = append(order, pipeJobOf(r))
	}
	if want := []string{other.ID}; !slices.Equal(order, want) {
		t.Errorf("jobs built %v, want only %v", order, want)
	}
	if end, _ := rig.d.Get(ctx, j.ID); end.State != gantry.StateCanceled {
		t.Errorf("canceled job is %s after the daemon ran, want canceled", end.State)
	}
}

// TestCancelUnderWay cancels a job in each phase while the fake of that
// phase blocks until its context ends.
func TestCancelUnderWay(t *testing.T) {
	refs := []string{"registry.example/iris:1", "registry.example/iris:2"}
	for _, phase := range []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing} {
		t.Run(string(phase), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := pipeNewFakes(t)
			entered := make(chan struct{}, 1)
			seen := make(chan [2]error, 1)
			block := pipeBlock(entered, seen)
			pipeBlockIn(f, phase, "", block)
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)
			j := pipeSubmit(t, rig.d, gantry.Spec{Push: refs})
			pipeReceive(t, "the job to be "+string(phase), entered)

			got, err := rig.d.Cancel(ctx, j.ID)
			if err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			if !got.CancelRequested || got.State.Terminal() && got.State != gantry.StateCanceled {
				t.Errorf("Cancel returned state %s, cancel requested %v; want the cancel recorded", got.State, got.CancelRequested)
			}
			// A second cancel, while the first is under way, is harmless.
			if _, err := rig.d.Cancel(ctx, j.ID); err != nil {
				t.Errorf("second Cancel: %v", err)
			}
			errs := pipeReceive(t, "the phase to see its context end", seen)
			if !errors.Is(errs[0], context.Canceled) || !errors.Is(errs[1], errCanceled) {
				t.Errorf("the %s phase's context ended with %v (cause %v), want context.Canceled caused by %v", phase, errs[0], errs[1], errCanceled)
			}
			end := pipeWait(t, rig.d, j.ID)
			if end.State != gantry.StateCanceled || end.Error != errCanceled.Error() {
				t.Errorf("state %s, error %q; want canceled, %q", end.State, end.Error, errCanceled)
			}
			again, err := rig.d.Cancel(ctx, j.ID)
			if err != nil || again.State != gantry.StateCanceled {
				t.Errorf("Cancel of the canceled job = %s, %v; want it canceled, no error", again.State, err)
			}

			cid := pipeContainerID(j.ID)
			calls := f.engine.calls()
			switch phase {
			case gantry.StateBuilding:
				// No container; the image is removed by name, in case the
				// build made it just before the cancel landed.
				want := []pipeCall{{"rmi", j.ImageName}}
				if fmt.Sprint(calls) != fmt.Sprint(want) {
					t.Errorf("engine calls %v for a job canceled while building, want only %v", calls, want)
				}
			case gantry.StateRunning, gantry.StatePushing:
				if phase == gantry.StateRunning {
					run := pipeIndex(calls, 0, pipeCall{"run", cid})
					stop := pipeIndex(calls, run, pipeCall{"stop", cid})
					if run < 0 || stop < 0 || pipeIndex(calls, stop, pipeCall{"remove", cid}) < 0 {
						t.Errorf("engine calls %v, want container %s stopped, then removed", calls, cid)
					}
				}
				if rmi := f.engine.args("rmi"); !slices.Equal(rmi, []string{j.ImageName}) {
					t.Errorf("images removed %v, want the job's [%s]", rmi, j.ImageName)
				}
			}
			if phase == gantry.StatePushing {
				if want := pipePushes(refs[:1]); !reflect.DeepEqual(end.Pushes, want) {
					t.Errorf("pushes = %v, want the one done before the cancel %v", end.Pushes, want)
				}
			}
			if pipeExists(t, rig.d.contextDir(j.ID)) {
				t.Errorf("build context of the canceled job is still there")
			}
			if logText := pipeReadLog(t, rig.d, j.ID); !strings.HasSuffix(logText, "==> canceled: canceled by the user\n") {
				t.Errorf("log does not end saying the job was canceled:\n%s", logText)
			}
		})
	}
}

func TestCancelRefused(t *testing.T) {
	ctx := context.Background()
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	tests := []struct {
		name   string
		id     func() string
		want   error
		states []gantry.State
	}{
		{name: "succeeded", want: gantry.ErrConflict, states: []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StateSucceeded}},
		{name: "rejected", want: gantry.ErrConflict, states: []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StateRejected}},
		{name: "failed", want: gantry.ErrConflict, states: []gantry.State{gantry.StateBuilding, gantry.StateFailed}},
		{name: "unknown job", want: gantry.ErrNotFound},
		{name: "not a job ID", want: gantry.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var id string
			var before *gantry.Job
			switch {
			case tc.states != nil:
				before = pipeRecord(t, rig.st, gantry.NewJob(gantry.Spec{}, time.Now()), nil, tc.states...)
				id = before.ID
			case tc.name == "unknown job":
				id = gantry.NewID(time.Now())
			default:
				id = "../../etc"
			}
			j, err := rig.d.Cancel(ctx, id)
			if !errors.Is(err, tc.want) || j != nil {
				t.Fatalf("Cancel = %v, %v; want nil, an error of kind %v", j, err, tc.want)
			}
			if before != nil {
				if after, _ := rig.d.Get(ctx, id); !reflect.DeepEqual(after, before) {
					t.Errorf("a refused cancel changed the record:\n got %s\nwant %s", pipeJSON(after), pipeJSON(before))
				}
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	const limit = gantry.Duration(50 * time.Millisecond)
	refs := []string{"registry.example/iris:1"}
	tests := []struct {
		name     string
		timeouts gantry.Timeouts
		phase    gantry.State // whose fake blocks until its context ends
		wantErr  string
		wantStop bool
	}{
		{name: "build", timeouts: gantry.Timeouts{Build: limit}, phase: gantry.StateBuilding, wantErr: "build timed out after 50ms"},
		{name: "training", timeouts: gantry.Timeouts{Train: limit}, phase: gantry.StateRunning, wantErr: "training timed out after 50ms", wantStop: true},
		{name: "push", timeouts: gantry.Timeouts{Push: limit}, phase: gantry.StatePushing, wantErr: "push timed out after 50ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := pipeNewFakes(t)
			seen := make(chan [2]error, 1)
			block := pipeBlock(nil, seen)
			switch tc.phase {
			case gantry.StateBuilding:
				f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
					return "", block(ctx)
				}
			case gantry.StateRunning:
				f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
					return runner.Exit{}, block(ctx)
				}
			case gantry.StatePushing:
				f.engine.run = pipeReplay("Model accuracy: 0.9667\n", runner.Exit{})
				f.pusher.push = func(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error) {
					return nil, block(ctx)
				}
			}
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)
			j := pipeSubmit(t, rig.d, gantry.Spec{Push: refs, Timeouts: tc.timeouts})
			end := pipeWait(t, rig.d, j.ID)

			if end.State != gantry.StateFailed || end.Error != tc.wantErr {
				t.Errorf("state %s, error %q; want failed, %q", end.State, end.Error, tc.wantErr)
			}
			errs := pipeReceive(t, "the phase to see its context end", seen)
			var te *timeoutError
			if !errors.Is(errs[0], context.DeadlineExceeded) || !errors.As(errs[1], &te) {
				t.Errorf("the phase's context ended with %v (cause %v), want its deadline, caused by a timeoutError", errs[0], errs[1])
			}
			stopped := f.engine.args("stop")
			if cid := pipeContainerID(j.ID); tc.wantStop && !slices.Contains(stopped, cid) {
				t.Errorf("containers stopped %v, want %s among them", stopped, cid)
			}
			if rmi := f.engine.args("rmi"); len(rmi) != 0 {
				t.Errorf("images removed %v: a failed job keeps its image", rmi)
			}
			if logText := pipeReadLog(t, rig.d, j.ID); !strings.HasSuffix(logText, "==> failed: "+tc.wantErr+"\n") {
				t.Errorf("log does not end saying %q:\n%s", tc.wantErr, logText)
			}
		})
	}

	t.Run("zero means no limit", func(t *testing.T) {
		t.Parallel()
		f := pipeNewFakes(t)
		var (
			mu        sync.Mutex
			deadlines []string
		)
		note := func(phase string, ctx context.Context) {
			if d, ok := ctx.Deadline(); ok {
				mu.Lock()
				deadlines = append(deadlines, fmt.Sprintf("%s: %v", phase, d))
				mu.Unlock()
			}
		}
		f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
			note("build", ctx)
			return pipeImageID(pipeJobOf(r)), nil
		}
		f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
			note("training", ctx)
			return runner.Exit{}, nil
		}
		f.pusher.push = func(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error) {
			note("push", ctx)
			return pipePushes(refs), nil
		}
		rig := pipeNewRig(t, 1, f)
		pipeRun(t, rig.d)
		j := pipeSubmit(t, rig.d, gantry.Spec{Push: refs})
		if j.Spec.Timeouts != (gantry.Timeouts{}) {
			t.Errorf("timeouts recorded %+v, want none (neither the job nor the daemon sets any)", j.Spec.Timeouts)
		}
		if end := pipeWait(t, rig.d, j.ID); end.State != gantry.StateSucceeded {
			t.Errorf("state %s (%q), want succeeded", end.State, end.Error)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(deadlines) != 0 {
			t.Errorf("phases ran with deadlines %v, want none", deadlines)
		}
	})

	t.Run("training counts from its first start, across restarts", func(t *testing.T) {
		t.Parallel()
		f := pipeNewFakes(t)
		f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
			<-ctx.Done()
			return runner.Exit{}, ctx.Err()
		}
		rig := pipeNewRig(t, 1, f)
		j := pipeRecord(t, rig.st, gantry.NewJob(gantry.Spec{Timeouts: gantry.Timeouts{Train: gantry.Duration(time.Hour)}}, time.Now()),
			func(j *gantry.Job) {
				j.Image, j.ContainerID = pipeImageID(j.ID), pipeContainerID(j.ID)
				started := time.Now().Add(-2 * time.Hour).UTC()
				j.Times.Run.Started = &started
			}, gantry.StateBuilding, gantry.StateRunning)
		pipeResume(t, rig.d)
		end := pipeWait(t, rig.d, j.ID)
		if want := "training timed out after 1h0m0s"; end.State != gantry.StateFailed || end.Error != want {
			t.Errorf("state %s, error %q; want failed, %q", end.State, end.Error, want)
		}
		if stopped := f.engine.args("stop"); !slices.Contains(stopped, j.ContainerID) {
			t.Errorf("containers stopped %v, want %s among them", stopped, j.ContainerID)
		}
	})
}

func TestSubmitFillsDefaults(t *testing.T) {
	defTimeouts := gantry.Timeouts{
		Build: gantry.Duration(30 * time.Minute), Train: gantry.Duration(2 * time.Hour), Push: gantry.Duration(10 * time.Minute),
	}
	defResources := gantry.Resources{Memory: 2 << 30, CPUs: 2, PidsLimit: 256, LogBytes: 64 << 20}
	own := gantry.Timeouts{Build: gantry.Duration(time.Minute), Train: gantry.Duration(5 * time.Minute), Push: gantry.Duration(time.Second)}
	ownRes := gantry.Resources{Memory: 512 << 20, CPUs: 0.5, PidsLimit: 32, LogBytes: 1 << 20}
	tests := []struct {
		name          string
		timeouts      gantry.Timeouts
		resources     gantry.Resources
		wantTimeouts  gantry.Timeouts
		wantResources gantry.Resources
	}{
		{name: "none set: the defaults", wantTimeouts: defTimeouts, wantResources: defResources},
		{name: "all set: the job's own", timeouts: own, resources: ownRes, wantTimeouts: own, wantResources: ownRes},
		{
			name:          "some set",
			timeouts:      gantry.Timeouts{Train: own.Train},
			resources:     gantry.Resources{CPUs: 0.5},
			wantTimeouts:  gantry.Timeouts{Build: defTimeouts.Build, Train: own.Train, Push: defTimeouts.Push},
			wantResources: gantry.Resources{Memory: defResources.Memory, CPUs: 0.5, PidsLimit: defResources.PidsLimit, LogBytes: defResources.LogBytes},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) {
				c.Policy.Timeouts, c.Policy.Resources = defTimeouts, defResources
			})
			j := pipeSubmit(t, rig.d, gantry.Spec{Timeouts: tc.timeouts, Resources: tc.resources})
			stored, err := rig.d.Get(context.Background(), j.ID)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			for _, got := range []*gantry.Job{j, stored} {
				if got.Spec.Timeouts != tc.wantTimeouts || got.Spec.Resources != tc.wantResources {
					t.Errorf("record shows timeouts %+v, resources %+v; want %+v, %+v",
						got.Spec.Timeouts, got.Spec.Resources, tc.wantTimeouts, tc.wantResources)
				}
			}
		})
	}
}

func TestResourcesReachTheContainer(t *testing.T) {
	tests := []struct {
		name      string
		resources gantry.Resources
		want      runner.Spec
	}{
		{name: "none"},
		{
			name:      "all",
			resources: gantry.Resources{Memory: 256 << 20, CPUs: 1.5, PidsLimit: 64},
			want:      runner.Spec{Memory: 268435456, NanoCPUs: 1_500_000_000, PidsLimit: 64},
		},
		{name: "a quarter CPU", resources: gantry.Resources{CPUs: 0.25}, want: runner.Spec{NanoCPUs: 250_000_000}},
		{name: "memory only", resources: gantry.Resources{Memory: 6 << 20}, want: runner.Spec{Memory: 6 << 20}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := pipeNewFakes(t)
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)
			j := pipeSubmit(t, rig.d, gantry.Spec{Resources: tc.resources})
			if end := pipeWait(t, rig.d, j.ID); end.State != gantry.StateSucceeded {
				t.Fatalf("state %s (%q), want succeeded", end.State, end.Error)
			}
			want := tc.want
			want.Image, want.Name = pipeImageID(j.ID), containerName(j.ID)
			want.LogBytes = 256 << 20 // the default log cap
			want.StopGrace = rig.d.cfg.StopTimeout
			want.Env = []string{"GANTRY_OUTPUT_DIR=/output"}
			want.Labels = map[string]string{runner.LabelJob: j.ID, runner.LabelDaemon: pipeInstance}
			if got := f.engine.specs(); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
				t.Errorf("containers created %+v, want one %+v", got, want)
			}
		})
	}
}

// TestEngineLostMidTraining breaks the connection to the engine once while
// a container trains, and checks what the daemon makes of what the engine
// says once it answers again.
func TestEngineLostMidTraining(t *testing.T) {
	const (
		sofar  = "Epoch 1/3 loss=0.61\nEpoch 2/3 lo" // the stream breaks mid-line
		output = "Epoch 1/3 loss=0.61\nEpoch 2/3 loss=0.33\nEpoch 3/3 loss=0.21\nModel accuracy: 0.9667\n"
	)
	tests := []struct {
		name      string
		pingFails int
		state     runner.State
		stateErr  error
		wantState gantry.State
		wantErr   []string
		wantRuns  int
	}{
		{
			name:      "container survived",
			state:     runner.State{Running: true},
			wantState: gantry.StateSucceeded,
			wantRuns:  2,
		},
		{
			name:      "container survived, engine slow to come back",
			pingFails: 1,
			state:     runner.State{Running: true},
			wantState: gantry.StateSucceeded,
			wantRuns:  2,
		},
		{
			name:      "engine restarted and killed the container",
			state:     runner.State{Running: false, ExitCode: 137},
			wantState: gantry.StateFailed,
			wantErr:   []string{"engine restarted", "137"},
			wantRuns:  1,
		},
		{
			name:      "container gone",
			stateErr:  gantry.Errorf(gantry.ErrNotFound, "container ctr-x: no longer exists"),
			wantState: gantry.StateFailed,
			wantErr:   []string{"container disappeared"},
			wantRuns:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := pipeNewFakes(t)
			var runs, pings atomic.Int64
			f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
				if runs.Add(1) == 1 {
					if err := pipeWriteChunks(out, sofar); err != nil {
						return runner.Exit{}, err
					}
					return runner.Exit{}, fmt.Errorf("%w: container logs: %w", gantry.ErrUnavailable, io.ErrUnexpectedEOF)
				}
				return runner.Exit{}, pipeWriteChunks(out, output) // replayed from the start
			}
			f.engine.ping = func(ctx context.Context) error {
				if pings.Add(1) <= int64(tc.pingFails) {
					return errors.New("dial unix /var/run/docker.sock: connect: connection refused")
				}
				return nil
			}
			f.engine.state = func(ctx context.Context, id string) (runner.State, error) { return tc.state, tc.stateErr }
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)
			j := pipeSubmit(t, rig.d, gantry.Spec{})
			end := pipeWait(t, rig.d, j.ID)

			if end.State != tc.wantState {
				t.Errorf("state %s (%q), want %s", end.State, end.Error, tc.wantState)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(end.Error, w) {
					t.Errorf("error %q, want it to mention %q", end.Error, w)
				}
			}
			cid := pipeContainerID(j.ID)
			if got := runs.Load(); got != int64(tc.wantRuns) {
				t.Errorf("Run called %d times, want %d", got, tc.wantRuns)
			}
			if got := pings.Load(); got != int64(tc.pingFails)+1 {
				t.Errorf("Ping called %d times, want %d (until it answers)", got, tc.pingFails+1)
			}
			if got := f.engine.args("state"); !slices.Equal(got, []string{cid}) {
				t.Errorf("State asked of %v, want [%s]", got, cid)
			}
			logText := pipeReadLog(t, rig.d, j.ID)
			if !strings.Contains(logText, "lost the Docker engine") {
				t.Errorf("log does not say the engine was lost:\n%s", logText)
			}
			if tc.wantState == gantry.StateSucceeded {
				if end.Metrics.Accuracy == nil || *end.Metrics.Accuracy != 0.9667 {
					t.Errorf("accuracy %s, want 0.9667", pipeFmtFloat(end.Metrics.Accuracy))
				}
				// Take out the daemon's own lines: what is left after the
				// marker is the container's output, each byte once.
				const back = "\x1e==> the container survived; re-attached\n"
				i := strings.Index(logText, trainingMarker(cid))
				lost := strings.Index(logText, "\n\x1e==> lost the Docker engine")
				k := strings.Index(logText, back)
				if i < 0 || lost < i || k < lost {
					t.Fatalf("log does not hold the marker, then the lost and re-attached lines:\n%s", logText)
				}
				rest := logText[i+len(trainingMarker(cid)):lost] + logText[k+len(back):]
				if want := output + "\x1e==> no outputs: training wrote nothing to /output\n\x1e==> accuracy 0.9667\n\x1e==> succeeded\n"; rest != want {
					t.Errorf("training part of the log, the daemon's lines taken out:\n%q\nwant\n%q", rest, want)
				}
			} else if stopped := f.engine.args("stop"); !slices.Contains(stopped, cid) {
				t.Errorf("containers stopped %v, want %s among them", stopped, cid)
			}
		})
	}
}

func TestSweepOrphans(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	const grace = time.Minute
	f := pipeNewFakes(t)
	rig := pipeNewRig(t, 1, f, func(c *Config) { c.OrphanGrace = grace })
	rig.d.now = func() time.Time { return now }

	cid := func(n int) string { return fmt.Sprintf("%064x", n) }
	record := func(edit func(*gantry.Job), states ...gantry.State) string {
		return pipeRecord(t, rig.st, gantry.NewJob(gantry.Spec{}, now), edit, states...).ID
	}
	running := record(func(j *gantry.Job) { j.ContainerID = cid(1) }, gantry.StateBuilding, gantry.StateRunning)
	succeeded := record(func(j *gantry.Job) { j.ContainerID = cid(2) }, gantry.StateBuilding, gantry.StateRunning, gantry.StateSucceeded)
	building := record(nil, gantry.StateBuilding)
	active := record(nil, gantry.StateBuilding)
	unknown := gantry.NewID(now)
	rig.d.mu.Lock()
	rig.d.active[active] = func(error) {}
	rig.d.mu.Unlock()

	old, young := now.Add(-2*grace), now.Add(-grace/2)
	tests := []struct {
		name        string
		job         string // the job label; "" for none
		id          string
		created     time.Time
		wantRemoved bool
	}{
		{name: "unknown job, old", job: unknown, id: cid(10), created: old, wantRemoved: true},
		{name: "unknown job, young", job: unknown, id: cid(11), created: young},
		{name: "unknown job, just past the grace", job: unknown, id: cid(12), created: now.Add(-grace), wantRemoved: true},
		{name: "no job label, old", id: cid(13), created: old, wantRemoved: true},
		{name: "ended job, old", job: succeeded, id: cid(2), created: old, wantRemoved: true},
		{name: "ended job, young", job: succeeded, id: cid(14), created: young},
		{name: "the container of a job under way", job: running, id: cid(1), created: old},
		{name: "another container of a job under way", job: running, id: cid(15), created: old, wantRemoved: true},
		{name: "a container of a job not yet recorded", job: building, id: cid(16), created: old, wantRemoved: true},
		{name: "a job this daemon runs", job: active, id: cid(17), created: old},
	}
	var list []runner.Container
	for _, tc := range tests {
		labels := map[string]string{runner.LabelDaemon: pipeInstance}
		if tc.job != "" {
			labels[runner.LabelJob] = tc.job
		}
		list = append(list, runner.Container{ID: tc.id, Labels: labels, Created: tc.created})
	}
	f.engine.containers = func(ctx context.Context, labels map[string]string) ([]runner.Container, error) {
		return list, nil
	}

	rig.d.sweepOrphans(ctx)

	removed := f.engine.args("remove")
	for _, tc := range tests {
		if got := slices.Contains(removed, tc.id); got != tc.wantRemoved {
			t.Errorf("%s: removed %v, want %v", tc.name, got, tc.wantRemoved)
		}
	}
	if len(removed) != len(slices.Compact(slices.Sorted(slices.Values(removed)))) {
		t.Errorf("containers removed %v: some more than once", removed)
	}
	f.engine.mu.Lock()
	listed := slices.Clone(f.engine.listed)
	f.engine.mu.Unlock()
	if want := []map[string]string{{runner.LabelDaemon: pipeInstance}}; !reflect.DeepEqual(listed, want) {
		t.Errorf("containers listed with labels %v, want %v: only this instance's", listed, want)
	}

	t.Run("listing fails", func(t *testing.T) {
		f := pipeNewFakes(t)
		f.engine.containers = func(ctx context.Context, labels map[string]string) ([]runner.Container, error) {
			return nil, fmt.Errorf("%w: list containers: engine away", gantry.ErrUnavailable)
		}
		rig := pipeNewRig(t, 1, f)
		rig.d.sweepOrphans(ctx)
		if removed := f.engine.args("remove"); len(removed) != 0 {
			t.Errorf("containers removed %v after the listing failed, want none", removed)
		}
	})
}

// TestPush is gantry push: a finished job's image pushed again.
func TestPush(t *testing.T) {
	ctx := context.Background()
	const (
		a   = "registry.example/iris:1"
		b   = "registry.example/iris:latest"
		c   = "other.example/team/iris:v2"
		old = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	)
	dig := func(n int) string { return fmt.Sprintf("sha256:%064d", n) }
	passed := []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StateSucceeded}
	tests := []struct {
		name      string
		spec      gantry.Spec
		states    []gantry.State
		gate      bool
		pushes    []gantry.Push // recorded before
		refs      []string
		sourceErr error
		gone      bool // the engine lost the image's name; its layers are kept
		pushFail  bool // the pusher does the first ref, then fails

		wantKind   error // nil: no error
		wantRefs   []string
		wantPushes []gantry.Push // recorded after
	}{
		{
			name: "again to its own refs", spec: gantry.Spec{Push: []string{a, b}}, states: passed, gate: true,
			pushes:     []gantry.Push{{Ref: a, Digest: old}, {Ref: b, Digest: old}},
			wantRefs:   []string{a, b},
			wantPushes: []gantry.Push{{Ref: a, Digest: dig(1)}, {Ref: b, Digest: dig(2)}},
		},
		{
			name: "to given refs", spec: gantry.Spec{Push: []string{a, b}}, states: passed, gate: true,
			pushes:     []gantry.Push{{Ref: a, Digest: old}, {Ref: b, Digest: old}},
			refs:       []string{c, a},
			wantRefs:   []string{c, a},
			wantPushes: []gantry.Push{{Ref: a, Digest: dig(2)}, {Ref: b, Digest: old}, {Ref: c, Digest: dig(1)}},
		},
		{
			name: "a job that had no refs, to given refs", states: passed, gate: true,
			refs:       []string{c},
			wantRefs:   []string{c},
			wantPushes: []gantry.Push{{Ref: c, Digest: dig(1)}},
		},
		{
			name: "a job whose push failed", spec: gantry.Spec{Push: []string{a}}, gate: true,
			states:     []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing, gantry.StateFailed},
			wantRefs:   []string{a},
			wantPushes: []gantry.Push{{Ref: a, Digest: dig(1)}},
		},
		{
			name: "the push fails part-way", spec: gantry.Spec{Push: []string{a, b}}, states: passed, gate: true,
			pushFail:   true,
			wantKind:   gantry.ErrUnavailable,
			wantRefs:   []string{a, b},
			wantPushes: []gantry.Push{{Ref: a, Digest: dig(1)}},
		},
		{
			name: "rejected", spec: gantry.Spec{Push: []string{a}},
			states:   []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StateRejected},
			wantKind: gantry.ErrConflict,
		},
		{
			name: "canceled before the gate", spec: gantry.Spec{Push: []string{a}},
			states:   []gantry.State{gantry.StateBuilding, gantry.StateCanceled},
			wantKind: gantry.ErrConflict,
		},
		{name: "queued", spec: gantry.Spec{Push: []string{a}}, wantKind: gantry.ErrConflict},
		{
			name: "running", spec: gantry.Spec{Push: []string{a}},
			states:   []gantry.State{gantry.StateBuilding, gantry.StateRunning},
			wantKind: gantry.ErrConflict,
		},
		{
			name: "pushing", spec: gantry.Spec{Push: []string{a}}, gate: true,
			states:   []gantry.State{gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing},
			wantKind: gantry.ErrConflict,
		},
		{
			name: "image gone", spec: gantry.Spec{Push: []string{a}}, states: passed, gate: true,
			sourceErr: gantry.Errorf(gantry.ErrNotFound, "image gantry/job: not in the engine"),
			wantKind:  gantry.ErrNotFound,
		},
		{
			name: "image removed from the engine, its layers kept", spec: gantry.Spec{Push: []string{a}}, states: passed, gate: true,
			gone:       true,
			wantRefs:   []string{a},
			wantPushes: []gantry.Push{{Ref: a, Digest: dig(1)}},
		},
		{
			name: "bad ref", spec: gantry.Spec{Push: []string{a}}, states: passed, gate: true,
			refs:     []string{c, "Bad Ref:1"},
			wantKind: gantry.ErrInvalid,
		},
		{name: "no refs at all", states: passed, gate: true, wantKind: gantry.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pipeNewFakes(t)
			f.source.err = tc.sourceErr
			f.pusher.push = func(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error) {
				fmt.Fprintf(progress, "pushing %v\n", refs)
				if tc.pushFail {
					return pipePushes(refs[:1]), fmt.Errorf("%w: push to registry.example: 503 Service Unavailable", gantry.ErrUnavailable)
				}
				return pipePushes(refs), nil
			}
			rig := pipeNewRig(t, 1, f)
			j := pipeRecord(t, rig.st, gantry.NewJob(tc.spec, time.Now()), func(j *gantry.Job) {
				j.GatePassed, j.Pushes = tc.gate, tc.pushes
				j.Image = pipeImageID(j.ID)
			}, tc.states...)
			if tc.gone {
				f.source.gone = map[string]bool{j.ImageName: true}
			}

			var progress bytes.Buffer
			got, err := rig.d.Push(ctx, j.ID, tc.refs, pipeLines{&progress})
			if tc.wantKind == nil && err != nil || tc.wantKind != nil && !errors.Is(err, tc.wantKind) {
				t.Fatalf("Push error = %v, want kind %v", err, tc.wantKind)
			}
			calls := f.pusher.pushCalls()
			if tc.wantRefs == nil {
				if len(calls) != 0 {
					t.Errorf("pusher called with %v, want never", calls[0].refs)
				}
				if after, _ := rig.d.Get(ctx, j.ID); !reflect.DeepEqual(after, j) {
					t.Errorf("a refused push changed the record:\n got %s\nwant %s", pipeJSON(after), pipeJSON(j))
				}
				return
			}
			// As the job's own push: the references, then the job tag of
			// each of their repositories.
			wantRefs := append(slices.Clone(tc.wantRefs), jobTags(j.ID, tc.wantRefs)...)
			if len(calls) != 1 || !slices.Equal(calls[0].refs, wantRefs) || calls[0].img != f.source.img {
				t.Errorf("pusher calls %+v, want one of the source's image to %v", calls, wantRefs)
			}
			wantAsked := []string{j.ImageName}
			if tc.gone {
				wantAsked = append(wantAsked, j.Image)
			}
			if names := f.source.asked(); !slices.Equal(names, wantAsked) {
				t.Errorf("image source asked for %v, want %v", names, wantAsked)
			}
			if !strings.Contains(progress.String(), "pushing") {
				t.Errorf("progress %q, want the pusher's", progress.String())
			}
			if got == nil {
				t.Fatalf("Push returned no job")
			}
			stored, err := rig.d.Get(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []*gantry.Job{got, stored} {
				pushes := slices.DeleteFunc(slices.Clone(r.Pushes), func(p gantry.Push) bool { return strings.Contains(p.Ref, ":job-") })
				if !reflect.DeepEqual(pushes, tc.wantPushes) {
					t.Errorf("pushes recorded %v, want %v (and the job tags)", pushes, tc.wantPushes)
				}
				if r.State != j.State {
					t.Errorf("state %s after gantry push, want it as it was (%s)", r.State, j.State)
				}
			}
		})
	}

	t.Run("unknown job", func(t *testing.T) {
		rig := pipeNewRig(t, 1, pipeNewFakes(t))
		if _, err := rig.d.Push(ctx, gantry.NewID(time.Now()), nil, gantry.Discard); !errors.Is(err, gantry.ErrNotFound) {
			t.Errorf("Push of an unknown job: %v, want ErrNotFound", err)
		}
	})
}

// pipeFailWriter accepts the first n bytes of each write, then fails with
// err.
type pipeFailWriter struct {
	n   int
	err error
}

func (w pipeFailWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		return len(p), nil
	}
	return w.n, w.err
}

func TestCountWriter(t *testing.T) {
	var got bytes.Buffer
	c := &countWriter{w: &got}
	for _, s := range []string{"Epoch 1\n", "", "Epoch 2\nacc", "uracy: 0.9\n"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if want := "Epoch 1\nEpoch 2\naccuracy: 0.9\n"; got.String() != want || c.n != int64(len(want)) {
		t.Errorf("passed on %q and counted %d, want %q and %d", got.String(), c.n, want, len(want))
	}

	// A short write counts what went through, no more.
	errFull := errors.New("no space left on device")
	c = &countWriter{w: pipeFailWriter{n: 3, err: errFull}}
	c.Write([]byte("abcdef"))
	if c.n != 3 {
		t.Errorf("after a short write counted %d, want 3", c.n)
	}

	// Together, as train uses them: a replay skips what was counted.
	var log bytes.Buffer
	c = &countWriter{w: &log}
	io.WriteString(&iox.SkipWriter{W: c, Skip: c.n}, "Epoch 1\nEpo")
	io.WriteString(&iox.SkipWriter{W: c, Skip: c.n}, "Epoch 1\nEpoch 2\nacc")
	io.WriteString(&iox.SkipWriter{W: c, Skip: c.n}, "Epoch 1\nEpoch 2\naccuracy: 0.9\n")
	if want := "Epoch 1\nEpoch 2\naccuracy: 0.9\n"; log.String() != want {
		t.Errorf("after three replays the log is %q, want %q", log.String(), want)
	}
}

// pipeHookStore is the real store with hooks a test uses to hold the
// daemon at a chosen point.
type pipeHookStore struct {
	*store.Store

	mu           sync.Mutex
	beforeUpdate func(id string)     // runs before Update
	afterList    func([]*gantry.Job) // runs after Unfinished, with what it read
}

func (s *pipeHookStore) Update(ctx context.Context, id string, fn func(*gantry.Job) error) (*gantry.Job, error) {
	s.mu.Lock()
	hook := s.beforeUpdate
	s.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	return s.Store.Update(ctx, id, fn)
}

func (s *pipeHookStore) Unfinished(ctx context.Context) ([]*gantry.Job, error) {
	jobs, err := s.Store.Unfinished(ctx)
	s.mu.Lock()
	hook := s.afterList
	s.mu.Unlock()
	if hook != nil && err == nil {
		hook(jobs)
	}
	return jobs, err
}

// TestCancelAsTheBuildEnds cancels a job just as its build succeeds: the
// image exists in the engine, but the job's record never holds it.
func TestCancelAsTheBuildEnds(t *testing.T) {
	f := pipeNewFakes(t)
	var rig *pipeRig
	f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
		if _, err := rig.d.Cancel(context.Background(), pipeJobOf(r)); err != nil {
			return "", err
		}
		return pipeImageID(pipeJobOf(r)), nil // the image is made
	}
	rig = pipeNewRig(t, 1, f)
	pipeRun(t, rig.d)
	j := pipeSubmit(t, rig.d, gantry.Spec{})
	if end := pipeWait(t, rig.d, j.ID); end.State != gantry.StateCanceled {
		t.Fatalf("state %s (%q), want canceled", end.State, end.Error)
	}
	if rmi := f.engine.args("rmi"); !slices.Equal(rmi, []string{j.ImageName}) {
		t.Errorf("images removed %v, want the canceled job's [%s]", rmi, j.ImageName)
	}
}

// TestRunWithATinyOrphanGrace runs a daemon whose orphan grace is 1ns.
func TestRunWithATinyOrphanGrace(t *testing.T) {
	rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.OrphanGrace = time.Nanosecond })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("Run panicked: %v", p)
		}
	}()
	if err := rig.d.Run(ctx); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestNewRefusesNoSlots(t *testing.T) {
	for _, n := range []int{0, -1} {
		f := pipeNewFakes(t)
		_, err := New(Config{DataDir: t.TempDir(), MaxJobs: n}, nil, f.builder, f.engine, f.pusher, f.source.read)
		if !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("New with MaxJobs %d: %v, want ErrInvalid", n, err)
		}
	}
}

// pipeTrainAfter is a fake training run that waits for a value on ch, then
// prints output and exits 0.
func pipeTrainAfter[T any](t *testing.T, what string, ch <-chan T, output string) func(context.Context, string, io.Writer) (runner.Exit, error) {
	return func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		pipeReceive(t, what, ch)
		io.WriteString(out, output)
		return runner.Exit{}, nil
	}
}

// TestUploadDuringTraining: a job that pushes sends its image's blobs while
// the container still runs, and pushes its manifests only after the gate;
// a job the gate rejects has its upload stopped and pushes nothing.
func TestUploadDuringTraining(t *testing.T) {
	const ref = "registry.example/iris:1"
	t.Run("passed", func(t *testing.T) {
		f := pipeNewFakes(t)
		uploaded := make(chan struct{})
		f.pusher.upload = func(ctx context.Context, refs []string) error {
			close(uploaded)
			return nil
		}
		// Training ends only once the upload is done: it ran meanwhile.
		f.engine.run = pipeTrainAfter(t, "the upload during training", uploaded, "Model accuracy: 0.97\n")
		r := pipeNewRig(t, 1, f)
		pipeRun(t, r.d)
		j := pipeWait(t, r.d, pipeSubmit(t, r.d, gantry.Spec{Push: []string{ref}, MinAccuracy: pipeFloat(0.9)}).ID)
		if j.State != gantry.StateSucceeded {
			t.Fatalf("state %s (%s), want succeeded", j.State, j.Error)
		}
		if got := f.pusher.uploadCalls(); len(got) != 1 || !slices.Equal(got[0], []string{ref}) {
			t.Errorf("uploads %v, want one to [%s]", got, ref)
		}
		if got := f.pusher.pushCalls(); len(got) != 1 {
			t.Errorf("%d pushes, want 1", len(got))
		}
	})
	t.Run("rejected", func(t *testing.T) {
		f := pipeNewFakes(t)
		entered := make(chan struct{}, 1)
		seen := make(chan [2]error, 1)
		block := pipeBlock(entered, seen)
		f.pusher.upload = func(ctx context.Context, refs []string) error { return block(ctx) }
		f.engine.run = pipeTrainAfter(t, "the upload to start", entered, "Model accuracy: 0.50\n")
		r := pipeNewRig(t, 1, f)
		pipeRun(t, r.d)
		j := pipeWait(t, r.d, pipeSubmit(t, r.d, gantry.Spec{Push: []string{ref}, MinAccuracy: pipeFloat(0.9)}).ID)
		if j.State != gantry.StateRejected {
			t.Fatalf("state %s (%s), want rejected", j.State, j.Error)
		}
		// The job ended only after its upload had stopped.
		select {
		case errs := <-seen:
			if !errors.Is(errs[0], context.Canceled) {
				t.Errorf("upload ended with %v, want canceled", errs[0])
			}
		default:
			t.Errorf("the job ended while its upload still ran")
		}
		if got := f.pusher.pushCalls(); len(got) != 0 {
			t.Errorf("pushes %v after a rejection, want none", got)
		}
	})
	t.Run("the push waits for the upload", func(t *testing.T) {
		f := pipeNewFakes(t)
		entered := make(chan struct{})
		release := make(chan struct{})
		f.pusher.upload = func(ctx context.Context, refs []string) error {
			close(entered)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f.engine.run = pipeReplay("Model accuracy: 0.97\n", runner.Exit{})
		r := pipeNewRig(t, 1, f)
		pipeRun(t, r.d)
		id := pipeSubmit(t, r.d, gantry.Spec{Push: []string{ref}}).ID
		pipeReceive(t, "the upload to start", entered)
		pipeEventually(t, "the job to reach pushing", func() bool {
			j, _ := r.d.Get(context.Background(), id)
			return j.State == gantry.StatePushing
		})
		time.Sleep(50 * time.Millisecond)
		if got := f.pusher.pushCalls(); len(got) != 0 {
			t.Fatalf("pushed %v while the upload still ran", got)
		}
		close(release)
		if j := pipeWait(t, r.d, id); j.State != gantry.StateSucceeded || len(f.pusher.pushCalls()) != 1 {
			t.Fatalf("state %s (%s), %d pushes; want succeeded after one push", j.State, j.Error, len(f.pusher.pushCalls()))
		}
	})
	t.Run("no push refs", func(t *testing.T) {
		f := pipeNewFakes(t)
		r := pipeNewRig(t, 1, f)
		pipeRun(t, r.d)
		j := pipeWait(t, r.d, pipeSubmit(t, r.d, gantry.Spec{}).ID)
		if j.State != gantry.StateSucceeded {
			t.Fatalf("state %s (%s), want succeeded", j.State, j.Error)
		}
		if got := f.pusher.uploadCalls(); len(got) != 0 {
			t.Errorf("uploads %v for a job that pushes nowhere, want none", got)
		}
	})
}

// TestPushOfAPromotingJobAsItsOwn: gantry push of a job that promotes does
// what the job's own push did: the job tag, the provenance record beside
// the image, and the champion rule, in the repository pushed to.
func TestPushOfAPromotingJobAsItsOwn(t *testing.T) {
	ctx := context.Background()
	f := pipeNewFakes(t)
	rig := pipeNewRig(t, 1, f)
	acc := 0.97
	spec := gantry.Spec{Push: []string{"registry.example/iris:1"}, Promote: "champion"}
	j := pipeRecord(t, rig.st, gantry.NewJob(spec, time.Now()), func(j *gantry.Job) {
		j.GatePassed, j.Image = true, pipeImageID(j.ID)
		j.Metrics.Accuracy = &acc
	}, gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing, gantry.StateSucceeded)

	got, err := rig.d.Push(ctx, j.ID, []string{"other.example/team/iris:v2"}, gantry.Discard)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	calls := f.pusher.pushCalls()
	want := []string{"other.example/team/iris:v2", "other.example/team/iris:job-" + j.ID}
	if len(calls) != 1 || !slices.Equal(calls[0].refs, want) {
		t.Fatalf("pusher calls %+v, want one to %v", calls, want)
	}
	digest := calls[0].returned[0].Digest
	if _, ok := f.pusher.attached[digest]; !ok {
		t.Errorf("no provenance record attached to %s", digest)
	}
	if tag := f.pusher.tags["other.example/team/iris:champion"]; tag != digest {
		t.Errorf("champion tag holds %q, want the pushed image %s", tag, digest)
	}
	if len(got.Promotions) != 1 || got.Promotions[0].Tag != "other.example/team/iris:champion" || !got.Promotions[0].Promoted {
		t.Errorf("promotions recorded %+v, want one on other.example/team/iris:champion, promoted", got.Promotions)
	}
}

// pipeBlockIn makes the fakes block, with block, in phase: the build (after
// writing buildOut), the training (after its first line), or the push
// (after its first reference).
func pipeBlockIn(f pipeFakes, phase gantry.State, buildOut string, block func(context.Context) error) {
	switch phase {
	case gantry.StateBuilding:
		f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
			fmt.Fprint(progress, buildOut)
			return "", block(ctx)
		}
	case gantry.StateRunning:
		f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
			fmt.Fprint(out, "Epoch 1/3\n")
			return runner.Exit{}, block(ctx)
		}
	case gantry.StatePushing:
		f.engine.run = pipeReplay("Model accuracy: 0.9667\n", runner.Exit{})
		f.pusher.push = func(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error) {
			return pipePushes(refs[:1]), block(ctx)
		}
	}
}
