package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/console"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/iox"
	"github.com/gantry-ml/gantry/internal/joblog"
)

func watchCmd(g *globals) *cobra.Command {
	var raw bool
	c := &cobra.Command{
		Use:   "watch [JOB]",
		Short: "Show a job as it goes (build, training, push) and how it ends; without JOB, every job's events",
		Long: `Watch shows job JOB until it ends: on a terminal, the build with BuildKit's own
display, the training output, and the push as a progress bar; otherwise the
job's log as it comes (like logs -f). The progress goes to stderr, the outcome
to stdout, and the exit code is the job's: 0 succeeded, 1 failed, 3 rejected
by the gate, 4 canceled. On a terminal, what the job printed is shown with
control characters escaped; --raw shows the log's bytes as they are.

Without JOB, it prints a line for each event of every job that has not ended,
and of every new job, until interrupted:
  TIME JOB STATE [accuracy X] [pushed REF@DIGEST]`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 1 {
				return &exitError{code: exitUsage, msg: fmt.Sprintf("gantry: %q takes at most one job\nUsage: %s", c.CommandPath(), c.UseLine())}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := g.client()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return watchAll(c.Context(), cl, c.OutOrStdout(), c.ErrOrStderr(), time.Second, shown(c.OutOrStdout(), raw))
			}
			return newView(cl, c.OutOrStdout(), c.ErrOrStderr(), false, raw).run(c.Context(), args[0])
		},
	}
	c.Flags().BoolVar(&raw, "raw", false, "write the job's output as it is, control characters and all (no live display)")
	return c
}

// jobSource is where a view reads a job from; *api.Client is one.
type jobSource interface {
	Get(ctx context.Context, id string) (*gantry.Job, error)
	Logs(ctx context.Context, id string, follow bool, w io.Writer) error
	BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error
}

// view shows one job until it ends, then its outcome. Without a terminal
// (or with raw) it copies the job's log as it comes. On a terminal (tty) it
// shows the build with BuildKit's own display, drawn from the build's status
// stream, then the rest of the log line by line, escaped, with gantryd's
// own lines dimmed and its push progress drawn as one bar.
type view struct {
	src      jobSource
	out      io.Writer // the outcome: what scripts read
	progress io.Writer // the job as it goes
	tty      bool
	raw      bool // the log's bytes as they are, no live display
	// display draws the build's status updates until ch is closed; tty only.
	display func(ctx context.Context, ch chan *client.SolveStatus) error
	now     func() time.Time
	poll    time.Duration // how often the record is read while waiting for the end

	bar   bool  // a push bar is on the current line
	meter meter // the push's rate
}

// newView returns the view of a job for a command writing to out and errOut:
// the live one when either is a terminal (drawn on that terminal, stderr
// first), else plain lines on errOut; quiet shows nothing but the outcome,
// raw the log's bytes as they are.
func newView(src jobSource, out, errOut io.Writer, quiet, raw bool) *view {
	v := &view{src: src, out: out, progress: errOut, raw: raw, now: time.Now, poll: 200 * time.Millisecond}
	if quiet {
		v.progress = io.Discard
		return v
	}
	if raw {
		return v
	}
	f := terminal(errOut, out)
	if f == nil {
		return v
	}
	con, err := console.ConsoleFromFile(f)
	if err != nil {
		return v
	}
	v.tty, v.progress = true, f
	v.display = func(ctx context.Context, ch chan *client.SolveStatus) error {
		d, err := progressui.NewDisplay(con, progressui.TtyMode)
		if err != nil {
			return err
		}
		_, err = d.UpdateFrom(ctx, ch)
		return err
	}
	return v
}

// terminal returns the first of ws that is a terminal, or nil.
func terminal(ws ...io.Writer) *os.File {
	for _, w := range ws {
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return f
		}
	}
	return nil
}

// run shows job id until it ends, prints its outcome, and returns the exit
// code the outcome calls for (nil when it succeeded).
func (v *view) run(ctx context.Context, id string) error {
	stopped := &exitError{code: exitFailed, msg: fmt.Sprintf("gantry: stopped watching; job %s goes on (gantry watch %s)", id, id)}
	var err error
	if v.tty {
		err = v.live(ctx, id)
	} else {
		lw := newLogWriter(v.progress, logModeFor(v.progress, v.raw))
		if err = v.src.Logs(ctx, id, true, lw); err == nil {
			err = lw.Close()
		}
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return stopped
	case gantry.Kind(err) == gantry.ErrNotFound:
		return err
	default:
		fmt.Fprintf(v.progress, "gantry: following the log: %v; waiting for the job to end\n", err)
	}
	j, err := v.waitEnd(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return stopped
		}
		return err
	}
	text := shown(v.out, v.raw)
	fmt.Fprintln(v.out, text(outcome(j)))
	for _, p := range j.Pushes {
		fmt.Fprintln(v.out, text(fmt.Sprintf("pushed %s@%s", p.Ref, p.Digest)))
	}
	return exitFor(j.State)
}

// exitFor is the exit code a job's final state calls for.
func exitFor(s gantry.State) error {
	switch s {
	case gantry.StateSucceeded:
		return nil
	case gantry.StateRejected:
		return &exitError{code: exitRejected}
	case gantry.StateCanceled:
		return &exitError{code: exitCanceled}
	}
	return &exitError{code: exitFailed}
}

// waitEnd reads job id's record until it is terminal. The log stream ends
// when the job does, so this rarely waits.
func (v *view) waitEnd(ctx context.Context, id string) (*gantry.Job, error) {
	for {
		j, err := v.src.Get(ctx, id)
		if err != nil || j.State.Terminal() {
			return j, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(v.poll):
		}
	}
}

// trainingMarker starts gantryd's log line (without its joblog.Mark) after
// which the container's output comes (gantryd's daemon.trainingMarker):
// what precedes it is the build's.
const trainingMarker = "==> training in container "

// live is the terminal view. The log and the build's status are read at
// once: the build's part of the log (up to the training marker) is held back
// while BuildKit's display draws the build from the status; once the log
// has passed the build, the display is finished and the rest of the log is
// shown as it comes.
func (v *view) live(ctx context.Context, id string) error {
	j, err := v.src.Get(ctx, id)
	if err != nil {
		return err
	}
	if j.State == gantry.StateQueued {
		fmt.Fprintf(v.progress, "%s==> job %s is queued%s\n", dim, id, reset)
	}
	g, gctx := errgroup.WithContext(ctx)
	lines := make(chan string)
	g.Go(func() error {
		defer close(lines)
		lw := &lineWriter{fn: func(l string) error {
			select {
			case lines <- l:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}}
		err := v.src.Logs(gctx, id, true, lw)
		if err == nil {
			err = lw.flush()
		}
		return err
	})
	over := make(chan struct{})  // the log has passed the build
	built := make(chan struct{}) // the build's display is finished
	var buildErr error
	g.Go(func() error {
		defer close(built)
		// Not fatal: without the display, the build's log lines stand in.
		buildErr = v.build(gctx, id, over)
		return nil
	})

	var held []string // the build's part of the log
	inBuild := true
	endBuild := func() {
		inBuild = false
		close(over)
		<-built
		all := buildErr != nil && gctx.Err() == nil
		if all {
			fmt.Fprintf(v.progress, "gantry: no build display (%v); the build's log follows\n", buildErr)
		}
		for _, l := range held {
			if _, own := joblog.Own(l); all || own {
				v.line(l)
			}
		}
		held = nil
	}
	for l := range lines {
		if !inBuild {
			v.line(l)
			continue
		}
		held = append(held, l)
		if text, own := joblog.Own(l); own && strings.HasPrefix(text, trainingMarker) {
			endBuild()
		}
	}
	if inBuild { // the job ended, or the log broke, before training
		endBuild()
	}
	v.endBar()
	return g.Wait()
}

// build draws the build's status with v.display from its first update on,
// following the status until the job ends or over is closed. Once the log
// has passed the build its status is complete, so the rest of it is read
// without following, skipping what the followed stream already gave.
func (v *view) build(ctx context.Context, id string, over <-chan struct{}) error {
	ch := make(chan *client.SolveStatus)
	shown := make(chan error, 1)
	started := false
	send := func(s *client.SolveStatus) error {
		if !started { // no display for a job that never built
			started = true
			go func() {
				err := v.display(ctx, ch)
				for range ch { // a display that gave up must not block the stream
				}
				shown <- err
			}()
		}
		select {
		case ch <- s:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	st := &statusStream{lw: lineWriter{fn: func(l string) error {
		var s client.SolveStatus
		if strings.TrimSpace(l) == "" || json.Unmarshal([]byte(l), &s) != nil {
			return nil // torn by a rebuild after a restart: the display does without
		}
		return send(&s)
	}}}

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	followed := make(chan error, 1)
	go func() { followed <- v.src.BuildStatus(fctx, id, true, st) }()
	var err error
	select {
	case err = <-followed:
	case <-over:
		stop()
		<-followed
		err = v.src.BuildStatus(ctx, id, false, &iox.SkipWriter{W: st, Skip: st.n})
	}
	if err == nil {
		err = st.lw.flush()
	}
	close(ch)
	if started {
		if derr := <-shown; err == nil {
			err = derr
		}
	}
	return err
}

// line shows one line of the log: gantryd's own (marked) with ownLine, the
// rest (what the build and the trainer printed) escaped.
func (v *view) line(l string) {
	if text, own := joblog.Own(l); own {
		v.ownLine(text)
		return
	}
	v.endBar()
	fmt.Fprintf(v.progress, "%s\n", escape(l))
}

// ownLine shows one line of gantryd's: push progress as the bar, the rest
// dimmed (and escaped: it may quote what a job or a registry said).
func (v *view) ownLine(l string) {
	if done, total, ok := parsePushing(l); ok {
		r := v.meter.add(v.now(), done)
		fmt.Fprintf(v.progress, "\r%s\x1b[K", pushBar(done, total, r))
		v.bar = true
		return
	}
	v.endBar()
	fmt.Fprintf(v.progress, "%s%s%s\n", dim, escape(l), reset)
}

// pushLines shows the progress lines of gantry push: the bar on a
// terminal, plain lines elsewhere. The "pushed REF@DIGEST" lines are left
// to the command's output.
type pushLines struct {
	lineWriter
	v *view
}

func pushProgress(errOut io.Writer, quiet bool) *pushLines {
	v := &view{progress: errOut, now: time.Now}
	if quiet {
		v.progress = io.Discard
	} else if f := terminal(errOut); f != nil {
		v.tty = true
	}
	p := &pushLines{v: v}
	p.fn = p.line
	return p
}

func (p *pushLines) line(l string) error {
	switch {
	case strings.HasPrefix(l, "pushed "):
	case p.v.tty: // gantryd's own progress, not a job log
		p.v.ownLine(l)
	default:
		fmt.Fprintln(p.v.progress, l)
	}
	return nil
}

// end leaves the bar on its own line.
func (p *pushLines) end() { p.v.endBar() }

// endBar leaves the push bar as it last stood, on its own line.
func (v *view) endBar() {
	if v.bar {
		fmt.Fprintln(v.progress)
		v.bar, v.meter = false, meter{}
	}
}

// parsePushing reads a push progress line of the job log,
// "pushing: 92.8 MB of 325.3 MB [97312345/341123456]", for the exact byte
// counts in brackets.
func parsePushing(l string) (done, total int64, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimRight(l, "\r "), "pushing: ")
	if !ok || !strings.HasSuffix(rest, "]") {
		return 0, 0, false
	}
	i := strings.LastIndexByte(rest, '[')
	if i < 0 {
		return 0, 0, false
	}
	d, t, ok := strings.Cut(rest[i+1:len(rest)-1], "/")
	if !ok {
		return 0, 0, false
	}
	done, err1 := strconv.ParseInt(d, 10, 64)
	total, err2 := strconv.ParseInt(t, 10, 64)
	if err1 != nil || err2 != nil || done < 0 || total < 0 {
		return 0, 0, false
	}
	return done, total, true
}

// barWidth is the number of cells of the push bar.
const barWidth = 30

// pushBar is the push's progress line: the bar, the share done, the bytes
// done and in all, and the rate (left out while unknown, at 0).
func pushBar(done, total int64, rate float64) string {
	frac := 0.0
	if total > 0 {
		frac = min(max(float64(done)/float64(total), 0), 1)
	}
	n := int(frac * barWidth)
	bar := strings.Repeat("=", n)
	if n < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-n-1)
	}
	s := fmt.Sprintf("pushing [%s] %3d%%  %s / %s", bar, int(frac*100), gantry.HumanBytes(done), gantry.HumanBytes(total))
	if rate > 0 {
		s += "  " + gantry.HumanBytes(int64(rate)) + "/s"
	}
	return s
}

// sample is how many bytes a push had done at a moment.
type sample struct {
	at   time.Time
	done int64
}

// rateWindow is how far back the rate looks: long enough to smooth the
// once-a-second progress lines, short enough to follow a change of pace.
const rateWindow = 5 * time.Second

// meter computes a push's rate from its successive progress lines.
type meter struct {
	samples []sample
}

// add records that done bytes were done at at, and returns the rate in
// bytes a second over the last rateWindow (0 until it can tell). A count
// that goes back is a new push, which starts afresh.
func (m *meter) add(at time.Time, done int64) float64 {
	if n := len(m.samples); n > 0 && done < m.samples[n-1].done {
		m.samples = m.samples[:0]
	}
	m.samples = append(m.samples, sample{at, done})
	// Keep the newest sample at least rateWindow old, and all after it.
	i := 0
	for i < len(m.samples)-2 && at.Sub(m.samples[i+1].at) >= rateWindow {
		i++
	}
	m.samples = m.samples[i:]
	return rate(m.samples)
}

// rate is the bytes a second between the first and the last of samples,
// or 0 when they do not tell.
func rate(samples []sample) float64 {
	if len(samples) < 2 {
		return 0
	}
	first, last := samples[0], samples[len(samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 || last.done < first.done {
		return 0
	}
	return float64(last.done-first.done) / dt
}

// lineWriter is an io.Writer that hands each complete line, without its
// newline, to fn.
type lineWriter struct {
	fn  func(string) error
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		l.buf = append(l.buf, p[:i]...)
		line := string(l.buf)
		l.buf = l.buf[:0]
		if err := l.fn(line); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	l.buf = append(l.buf, p...)
	return n, nil
}

// flush hands on a last line that had no newline.
func (l *lineWriter) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	line := string(l.buf)
	l.buf = l.buf[:0]
	return l.fn(line)
}

// statusStream reads the build's status stream (JSON lines) into lw,
// counting the bytes it took.
type statusStream struct {
	lw lineWriter
	n  int64
}

func (s *statusStream) Write(p []byte) (int, error) {
	n, err := s.lw.Write(p)
	s.n += int64(n)
	return n, err
}

// eventSource is where gantry watch without a job reads events; *api.Client
// is one.
type eventSource interface {
	Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error
}

// watchAll prints a line for each event of every job that has not ended,
// then for each new event, until ctx ends. It catches up with the stream
// first (every job's events so far), to learn which jobs are still going
// and the number to follow on from; a broken stream is joined again from
// there after retry.
func watchAll(ctx context.Context, src eventSource, out, errOut io.Writer, retry time.Duration, text func(string) string) error {
	el := &eventLines{loc: time.Local, text: text}
	type pending struct {
		seq  uint64
		line string
	}
	going := map[string][]pending{} // the lines of the jobs that have not ended
	var seq uint64
	err := src.Events(ctx, 0, "", false, func(e gantry.Event) error {
		seq = e.Seq
		l := el.line(e)
		if el.state(e.Job).Terminal() {
			delete(going, e.Job)
		} else {
			going[e.Job] = append(going[e.Job], pending{e.Seq, l})
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var backlog []pending
	for _, ps := range going {
		backlog = append(backlog, ps...)
	}
	slices.SortFunc(backlog, func(a, b pending) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range backlog {
		fmt.Fprintln(out, p.line)
	}

	broken := false
	for {
		err := src.Events(ctx, seq, "", true, func(e gantry.Event) error {
			seq, broken = e.Seq, false
			_, err := fmt.Fprintln(out, el.line(e))
			return err
		})
		if ctx.Err() != nil {
			return nil
		}
		if !broken {
			broken = true
			if err == nil {
				err = fmt.Errorf("gantryd closed it")
			}
			fmt.Fprintf(errOut, "gantry: the event stream broke (%v); joining it again\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// eventLines turns events into gantry watch's lines,
// "TIME JOB STATE [accuracy X] [pushed REF@DIGEST][: ERROR]", remembering
// each job's state and accuracy to put on the lines of its later events.
type eventLines struct {
	loc  *time.Location
	text func(string) string // how a job's text is shown (shown)
	jobs map[string]*jobSeen
}

type jobSeen struct {
	state    gantry.State
	accuracy *float64
}

func (el *eventLines) seen(job string) *jobSeen {
	if el.jobs == nil {
		el.jobs = map[string]*jobSeen{}
	}
	js := el.jobs[job]
	if js == nil {
		js = &jobSeen{}
		el.jobs[job] = js
	}
	return js
}

// state is the last state seen of job, "" when none was.
func (el *eventLines) state(job string) gantry.State { return el.seen(job).state }

// line is e's line.
func (el *eventLines) line(e gantry.Event) string {
	js := el.seen(e.Job)
	switch e.Type {
	case gantry.EventState:
		js.state = e.State
	case gantry.EventAccuracy:
		if e.Accuracy != nil {
			a := *e.Accuracy
			js.accuracy = &a
		}
	}
	state := string(js.state)
	if state == "" {
		state = "-"
	}
	var b strings.Builder
	loc := el.loc
	if loc == nil {
		loc = time.Local
	}
	fmt.Fprintf(&b, "%s %s %s", e.Time.In(loc).Format(time.RFC3339), e.Job, state)
	if js.accuracy != nil {
		fmt.Fprintf(&b, " accuracy %.4f", *js.accuracy)
	}
	switch {
	case e.Type == gantry.EventPush && e.Push != nil:
		fmt.Fprintf(&b, " pushed %s@%s", e.Push.Ref, e.Push.Digest)
	case e.Type == gantry.EventState && e.Error != "":
		b.WriteString(": " + e.Error)
	case e.Type != gantry.EventState && e.Type != gantry.EventAccuracy && e.Type != gantry.EventPush:
		b.WriteString(" " + e.Type)
	}
	if el.text != nil {
		return el.text(b.String())
	}
	return b.String()
}
