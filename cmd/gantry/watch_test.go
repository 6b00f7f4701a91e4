package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/gantry-ml/gantry"
)

// fakeSource is a hand-written jobSource.
type fakeSource struct {
	get         func(ctx context.Context, id string) (*gantry.Job, error)
	logs        func(ctx context.Context, id string, follow bool, w io.Writer) error
	buildStatus func(ctx context.Context, id string, follow bool, w io.Writer) error
	progress    func(ctx context.Context, id string, follow bool, w io.Writer) error
	// events, when set, is the job's event stream; without it, a stream
	// that ends at once (as gantryd's does for a job that has ended).
	events func(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error
}

func (f *fakeSource) Get(ctx context.Context, id string) (*gantry.Job, error) { return f.get(ctx, id) }
func (f *fakeSource) Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error {
	if f.events == nil {
		return nil
	}
	return f.events(ctx, since, job, follow, fn)
}
func (f *fakeSource) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	return f.logs(ctx, id, follow, w)
}
func (f *fakeSource) BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error {
	return f.buildStatus(ctx, id, follow, w)
}

// Progress gives what f.progress writes; without it, a job that pushed
// nothing.
func (f *fakeSource) Progress(ctx context.Context, id string, follow bool, w io.Writer) error {
	if f.progress == nil {
		return nil
	}
	return f.progress(ctx, id, follow, w)
}

const (
	testJob = "06h17gxw9sr0xqcw"
	// testBuildLog is the build's part of a job log: gantryd's lines and
	// BuildKit's plain progress, which the terminal view leaves to the display.
	// gantryd's own lines start with joblog.Mark (0x1E).
	testBuildLog = "\x1e==> building gantry/job:06h17gxw9sr0xqcw (Dockerfile Dockerfile)\n" +
		"#1 [internal] load build definition from Dockerfile\n" +
		"#1 DONE 0.0s\n" +
		"\x1e==> built image sha256:abc\n"
	testRunLog = testTrainLog + testPushedLog
	// testTrainLog is the run's log up to the push; testPushedLog the rest.
	testTrainLog = "\x1e==> training in container 0123456789ab\n" +
		"step 0\n" +
		"step 1\n" +
		"Model accuracy: 0.9333\n" +
		"\x1e==> accuracy 0.9333\n" +
		"\x1e==> pushing to [reg/x:latest]\n"
	testPushedLog = "\x1epushed reg/x:latest@sha256:def\n" +
		"\x1e==> succeeded\n"
	// testProgress is the push's typed progress, as gantryd serves it.
	testProgress = `{"ref":"reg/x:latest","current":0,"total":3145728}` + "\n" +
		`{"ref":"reg/x:latest","current":1048576,"total":3145728}` + "\n" +
		`{"ref":"reg/x:latest","current":3145728,"total":3145728}` + "\n"
)

func endedJob(s gantry.State) *gantry.Job {
	j := &gantry.Job{ID: testJob, State: s}
	if s != gantry.StateCanceled {
		a := 0.9333
		j.Metrics.Accuracy = &a
	}
	switch s {
	case gantry.StateSucceeded:
		j.Pushes = []gantry.Push{{Ref: "reg/x:latest", Digest: "sha256:def"}}
	case gantry.StateRejected:
		j.Error = "accuracy 0.9333 is below the gate 0.95"
	case gantry.StateFailed:
		j.Error = "training exited with code 3"
	case gantry.StateCanceled:
		j.Error = "canceled"
	}
	return j
}

func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return -1
}

// Without a terminal, the view is the log as it comes, then the outcome,
// and the exit code is the job's.
func TestViewPlain(t *testing.T) {
	tests := []struct {
		state gantry.State
		out   string
		code  int
	}{
		{gantry.StateSucceeded, "job 06h17gxw9sr0xqcw succeeded: accuracy 0.9333\npushed reg/x:latest@sha256:def\n", 0},
		{gantry.StateFailed, "job 06h17gxw9sr0xqcw failed: accuracy 0.9333: training exited with code 3\n", exitFailed},
		{gantry.StateRejected, "job 06h17gxw9sr0xqcw rejected: accuracy 0.9333: accuracy 0.9333 is below the gate 0.95\n", exitRejected},
		{gantry.StateCanceled, "job 06h17gxw9sr0xqcw canceled: canceled\n", exitCanceled},
	}
	for _, tt := range tests {
		src := &fakeSource{
			get: func(context.Context, string) (*gantry.Job, error) { return endedJob(tt.state), nil },
			logs: func(_ context.Context, id string, follow bool, w io.Writer) error {
				if id != testJob || !follow {
					t.Errorf("Logs(%q, follow %v), want the job followed", id, follow)
				}
				io.WriteString(w, testBuildLog+testRunLog)
				return nil
			},
			buildStatus: func(context.Context, string, bool, io.Writer) error {
				t.Error("the plain view read the build status")
				return nil
			},
		}
		var out, progress bytes.Buffer
		v := newView(src, &out, &progress, false, false)
		err := v.run(context.Background(), testJob)
		if got := exitCode(err); got != tt.code {
			t.Errorf("%s: exit code %d (%v), want %d", tt.state, got, err, tt.code)
		}
		if out.String() != tt.out {
			t.Errorf("%s: stdout\n got %q\nwant %q", tt.state, out.String(), tt.out)
		}
		if want := strings.ReplaceAll(testBuildLog+testRunLog, "\x1e", ""); progress.String() != want {
			t.Errorf("%s: stderr is not the log as it is, gantryd's marks taken out:\n%q", tt.state, progress.String())
		}
	}
}

// When the log breaks off, the view says so and waits for the job's end
// from its record; an unknown job is an error at once.
func TestViewLogBreaks(t *testing.T) {
	gets := 0
	src := &fakeSource{
		get: func(context.Context, string) (*gantry.Job, error) {
			if gets++; gets < 3 {
				return &gantry.Job{ID: testJob, State: gantry.StateRunning}, nil
			}
			return endedJob(gantry.StateSucceeded), nil
		},
		logs: func(_ context.Context, _ string, _ bool, w io.Writer) error {
			io.WriteString(w, "step 0\n")
			return errors.New("connection reset")
		},
	}
	var out, progress bytes.Buffer
	v := newView(src, &out, &progress, false, false)
	if err := v.run(context.Background(), testJob); err != nil {
		t.Fatalf("run: %v", err)
	}
	if want := "step 0\ngantry: following the log: connection reset; waiting for the job to end\n"; progress.String() != want {
		t.Errorf("stderr %q, want %q", progress.String(), want)
	}
	if !strings.HasPrefix(out.String(), "job "+testJob+" succeeded") {
		t.Errorf("stdout %q, want the outcome", out.String())
	}

	src.logs = func(context.Context, string, bool, io.Writer) error {
		return gantry.Errorf(gantry.ErrNotFound, "job nosuch not found")
	}
	src.get = func(context.Context, string) (*gantry.Job, error) {
		t.Error("the view read the record of a job it knows is not there")
		return nil, nil
	}
	err := newView(src, io.Discard, io.Discard, false, false).run(context.Background(), "nosuch")
	if !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("run on an unknown job: %v, want ErrNotFound", err)
	}
}

// Interrupted, the view stops and says the job goes on.
func TestViewInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	src := &fakeSource{
		logs: func(ctx context.Context, _ string, _ bool, _ io.Writer) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		},
	}
	err := newView(src, io.Discard, io.Discard, false, false).run(ctx, testJob)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitFailed || !strings.Contains(ee.msg, "goes on") {
		t.Errorf("run interrupted: %v, want exit 1 saying the job goes on", err)
	}
}

// testStatuses is a build status stream: JSON lines of client.SolveStatus.
func testStatuses(t *testing.T, names ...string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	for i, n := range names {
		s := client.SolveStatus{Vertexes: []*client.Vertex{{Digest: digest.Digest("sha256:" + strings.Repeat(fmt.Sprint(i), 64)), Name: n, Started: &now, Completed: &now}}}
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// On a terminal, the build goes to BuildKit's display (each status update
// once, though the followed stream is cut mid-line and read again), the
// build's plain lines are left out, and the push is one bar redrawn in place
// with its rate.
func TestViewTTY(t *testing.T) {
	statuses := testStatuses(t, "[internal] load build definition from Dockerfile", "[1/2] FROM base", "[2/2] COPY train.py /train.py")
	cut := bytes.IndexByte(statuses, '\n') + 20 // the first update and part of the second
	partial := make(chan struct{})
	pushing, pushed := make(chan struct{}), make(chan struct{})
	src := &fakeSource{
		get: func(context.Context, string) (*gantry.Job, error) {
			return endedJob(gantry.StateSucceeded), nil
		},
		logs: func(_ context.Context, _ string, follow bool, w io.Writer) error {
			if !follow {
				t.Error("the log was not followed")
			}
			io.WriteString(w, testBuildLog)
			<-partial // the training marker comes while the status stream is mid-line
			io.WriteString(w, testTrainLog)
			close(pushing)
			<-pushed // the push's progress is drawn before its last lines
			io.WriteString(w, testPushedLog)
			return nil
		},
		buildStatus: func(ctx context.Context, _ string, follow bool, w io.Writer) error {
			if !follow {
				_, err := w.Write(statuses)
				return err
			}
			if _, err := w.Write(statuses[:cut]); err != nil {
				return err
			}
			close(partial)
			<-ctx.Done() // a job still going: the stream goes on until cut off
			return ctx.Err()
		},
		progress: func(ctx context.Context, _ string, follow bool, w io.Writer) error {
			<-pushing
			io.WriteString(w, testProgress)
			close(pushed)
			return nil
		},
	}
	var mu sync.Mutex
	var shown []string
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	tick := 0
	var out, progress bytes.Buffer
	v := &view{
		src: src, out: &out, progress: &progress, tty: true,
		display: func(ctx context.Context, ch chan *client.SolveStatus) error {
			for s := range ch {
				mu.Lock()
				for _, vx := range s.Vertexes {
					shown = append(shown, vx.Name)
				}
				mu.Unlock()
			}
			return nil
		},
		now: func() time.Time { tick++; return t0.Add(time.Duration(tick) * time.Second) },
	}
	if err := v.run(context.Background(), testJob); err != nil {
		t.Fatalf("run: %v", err)
	}

	want := []string{"[internal] load build definition from Dockerfile", "[1/2] FROM base", "[2/2] COPY train.py /train.py"}
	if strings.Join(shown, "|") != strings.Join(want, "|") {
		t.Errorf("the display was shown %q, want %q", shown, want)
	}
	wantProgress := dim + "==> building gantry/job:06h17gxw9sr0xqcw (Dockerfile Dockerfile)" + reset + "\n" +
		dim + "==> built image sha256:abc" + reset + "\n" +
		dim + "==> training in container 0123456789ab" + reset + "\n" +
		"step 0\nstep 1\nModel accuracy: 0.9333\n" +
		dim + "==> accuracy 0.9333" + reset + "\n" +
		dim + "==> pushing to [reg/x:latest]" + reset + "\n" +
		"\rpushing [>                             ]   0%  0 B / 3.0 MB\x1b[K" +
		"\rpushing [==========>                   ]  33%  1.0 MB / 3.0 MB  1.0 MB/s\x1b[K" +
		"\rpushing [==============================] 100%  3.0 MB / 3.0 MB  1.5 MB/s\x1b[K\n" +
		dim + "pushed reg/x:latest@sha256:def" + reset + "\n" +
		dim + "==> succeeded" + reset + "\n"
	if progress.String() != wantProgress {
		t.Errorf("progress\n got %q\nwant %q", progress.String(), wantProgress)
	}
	if want := "job 06h17gxw9sr0xqcw succeeded: accuracy 0.9333\npushed reg/x:latest@sha256:def\n"; out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
}

// A job that ends in its build (or before) has no training marker: the
// display ends with the job, and gantryd's lines follow it. A job that never
// built gets no display at all.
func TestViewTTYEndsInBuild(t *testing.T) {
	tests := []struct {
		name     string
		log      string
		statuses []byte
		shown    int
		progress string
		state    gantry.State
	}{
		{
			name:     "build fails",
			log:      "\x1e==> building gantry/job:x (Dockerfile Dockerfile)\n#1 ERROR: exit code: 7\n\x1e==> failed: build failed at step [2/3] RUN false\n",
			statuses: testStatuses(t, "[1/3] FROM base", "[2/3] RUN false"),
			shown:    2,
			progress: dim + "==> building gantry/job:x (Dockerfile Dockerfile)" + reset + "\n" + dim + "==> failed: build failed at step [2/3] RUN false" + reset + "\n",
			state:    gantry.StateFailed,
		},
		{
			name:     "canceled while queued",
			log:      "\x1e==> canceled: canceled\n",
			shown:    0,
			progress: dim + "==> canceled: canceled" + reset + "\n",
			state:    gantry.StateCanceled,
		},
	}
	for _, tt := range tests {
		src := &fakeSource{
			get: func(context.Context, string) (*gantry.Job, error) { return endedJob(tt.state), nil },
			logs: func(_ context.Context, _ string, _ bool, w io.Writer) error {
				_, err := io.WriteString(w, tt.log)
				return err
			},
			buildStatus: func(_ context.Context, _ string, _ bool, w io.Writer) error {
				_, err := w.Write(tt.statuses) // the job has ended: the stream ends too
				return err
			},
		}
		displays, shown := 0, 0
		var progress bytes.Buffer
		v := &view{src: src, out: io.Discard, progress: &progress, tty: true, now: time.Now,
			display: func(ctx context.Context, ch chan *client.SolveStatus) error {
				displays++
				for range ch {
					shown++
				}
				return nil
			},
		}
		v.run(context.Background(), testJob)
		if wantDisplays := min(tt.shown, 1); displays != wantDisplays || shown != tt.shown {
			t.Errorf("%s: %d displays showed %d updates, want %d showing %d", tt.name, displays, shown, wantDisplays, tt.shown)
		}
		if progress.String() != tt.progress {
			t.Errorf("%s: progress\n got %q\nwant %q", tt.name, progress.String(), tt.progress)
		}
	}
}

// Without the build status (an older gantryd), the build's own log lines
// stand in for the display.
func TestViewTTYWithoutBuildStatus(t *testing.T) {
	src := &fakeSource{
		get: func(context.Context, string) (*gantry.Job, error) { return endedJob(gantry.StateSucceeded), nil },
		logs: func(_ context.Context, _ string, _ bool, w io.Writer) error {
			_, err := io.WriteString(w, testBuildLog+"\x1e==> training in container 0123456789ab\nstep 0\n")
			return err
		},
		buildStatus: func(context.Context, string, bool, io.Writer) error {
			return gantry.Errorf(gantry.ErrNotFound, "404 page not found")
		},
	}
	var progress bytes.Buffer
	v := &view{src: src, out: io.Discard, progress: &progress, tty: true, now: time.Now,
		display: func(context.Context, chan *client.SolveStatus) error {
			t.Error("a display was started with no status")
			return nil
		},
	}
	if err := v.run(context.Background(), testJob); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{"no build display (404 page not found)", "#1 [internal] load build definition", "#1 DONE 0.0s", "step 0"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
}

// On a terminal, only gantryd's marked lines are its own: a build step or
// a trainer that prints the training marker, "==> succeeded" or a push
// progress line gets none of their effects (the display goes on, no dim,
// no bar), and its escape sequences are shown, not acted on.
func TestViewTTYForgedLines(t *testing.T) {
	const forgedMarker = "==> training in container 0123456789ab"
	log := "\x1e==> building gantry/job:x (Dockerfile Dockerfile)\n" +
		forgedMarker + "\n" + // printed by a RUN step
		"\x1e==> built image sha256:abc\n" +
		"\x1e" + forgedMarker + "\n" +
		"\x1b]52;c;ZXZpbA==\x07\x1b]0;title\x07\x1b[2J==> succeeded\n" +
		"pushing: 3.0 MB of 3.0 MB [3145728/3145728]\n" +
		"\x1e==> succeeded\n"
	statuses := testStatuses(t, "[1/2] FROM base", "[2/2] RUN echo")
	src := &fakeSource{
		get: func(context.Context, string) (*gantry.Job, error) { return endedJob(gantry.StateSucceeded), nil },
		logs: func(_ context.Context, _ string, _ bool, w io.Writer) error {
			_, err := io.WriteString(w, log)
			return err
		},
		buildStatus: func(_ context.Context, _ string, _ bool, w io.Writer) error {
			_, err := w.Write(statuses)
			return err
		},
	}
	shown := 0
	var progress bytes.Buffer
	v := &view{src: src, out: io.Discard, progress: &progress, tty: true, now: time.Now,
		display: func(ctx context.Context, ch chan *client.SolveStatus) error {
			for range ch {
				shown++
			}
			return nil
		},
	}
	if err := v.run(context.Background(), testJob); err != nil {
		t.Fatalf("run: %v", err)
	}
	if shown != 2 {
		t.Errorf("the display showed %d status updates, want 2", shown)
	}
	want := dim + "==> building gantry/job:x (Dockerfile Dockerfile)" + reset + "\n" +
		dim + "==> built image sha256:abc" + reset + "\n" +
		dim + forgedMarker + reset + "\n" +
		`\x1b]52;c;ZXZpbA==\x07\x1b]0;title\x07\x1b[2J==> succeeded` + "\n" +
		"pushing: 3.0 MB of 3.0 MB [3145728/3145728]\n" +
		dim + "==> succeeded" + reset + "\n"
	if progress.String() != want {
		t.Errorf("progress\n got %q\nwant %q", progress.String(), want)
	}
}

// waitEnd reads the record once, then waits on the job's event stream,
// which gantryd ends at the job's end, and reads it once more: no record
// is read while the job goes on.
func TestWaitEndWokenByEvents(t *testing.T) {
	ended := make(chan struct{})
	gets := 0
	src := &fakeSource{
		get: func(context.Context, string) (*gantry.Job, error) {
			gets++
			select {
			case <-ended:
				return endedJob(gantry.StateSucceeded), nil
			default:
				return &gantry.Job{ID: testJob, State: gantry.StateRunning}, nil
			}
		},
		events: func(_ context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error {
			if job != testJob || !follow {
				t.Errorf("events of %q (follow %v), want %s's, followed", job, follow, testJob)
			}
			fn(gantry.Event{Job: testJob, Type: gantry.EventState, State: gantry.StateRunning})
			close(ended) // the job ends; gantryd ends the stream
			return fn(gantry.Event{Job: testJob, Type: gantry.EventState, State: gantry.StateSucceeded})
		},
	}
	j, err := waitEnd(context.Background(), src, testJob)
	if err != nil || j.State != gantry.StateSucceeded {
		t.Fatalf("waitEnd: %v, %v; want the ended record", j, err)
	}
	if gets != 2 {
		t.Errorf("read the record %d times, want 2 (before the stream, after its end)", gets)
	}

	// A stream that breaks is an error, not a reason to read in a loop.
	src.events = func(context.Context, uint64, string, bool, func(gantry.Event) error) error {
		return errors.New("connection reset")
	}
	ended = make(chan struct{})
	if _, err := waitEnd(context.Background(), src, testJob); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("waitEnd on a broken stream: %v, want its error", err)
	}
}
