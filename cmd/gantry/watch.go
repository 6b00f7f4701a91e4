// gantry watch, and the loop that follows one job: its log, its build's
// status stream and its record, until it ends. What is drawn is view.go's.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
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
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			if len(args) == 0 {
				return watchAll(c.Context(), cl, c.OutOrStdout(), c.ErrOrStderr(), time.Second, shown(c.OutOrStdout(), raw))
			}
			return newView(cl, c.OutOrStdout(), c.ErrOrStderr(), false, raw).run(c.Context(), args[0])
		}),
	}
	c.Flags().BoolVar(&raw, "raw", false, "write the job's output as it is, control characters and all (no live display)")
	return c
}

// jobSource is where a view reads a job from; *api.Client is one.
type jobSource interface {
	jobEnds
	Logs(ctx context.Context, id string, follow bool, w io.Writer) error
	BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error
	Progress(ctx context.Context, id string, follow bool, w io.Writer) error
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
	// The log stream ends when the job does, so this rarely waits.
	j, err := waitEnd(ctx, v.src, id)
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
	lines := v.followLog(g, gctx, id)
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
	pushes, drawn := v.followProgress(g, gctx, id)
	for lines != nil {
		select {
		case p := <-pushes:
			v.pushed(p)
			continue
		case l, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			if !inBuild {
				v.line(l)
				continue
			}
			held = append(held, l)
			if text, own := joblog.Own(l); own && strings.HasPrefix(text, trainingMarker) {
				endBuild()
			}
		}
	}
	close(drawn)
	if inBuild { // the job ended, or the log broke, before training
		endBuild()
	}
	v.endBar()
	return g.Wait()
}

// followLog follows job id's log in g, handing each line to the channel it
// returns, which is closed once the log ends.
func (v *view) followLog(g *errgroup.Group, ctx context.Context, id string) <-chan string {
	lines := make(chan string)
	g.Go(func() error {
		defer close(lines)
		lw := &lineWriter{fn: func(l string) error {
			select {
			case lines <- l:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
		err := v.src.Logs(ctx, id, true, lw)
		if err == nil {
			err = lw.flush()
		}
		return err
	})
	return lines
}

// followProgress follows job id's push progress in g, handing each record
// to pushes until the job ends or drawn is closed (the view stopped
// drawing). Progress is typed (gantry.Progress): the bar is drawn from it,
// never from the log's text.
func (v *view) followProgress(g *errgroup.Group, ctx context.Context, id string) (pushes <-chan gantry.Progress, drawn chan struct{}) {
	ch, done := make(chan gantry.Progress), make(chan struct{})
	g.Go(func() error {
		lw := &lineWriter{fn: func(l string) error {
			var p gantry.Progress
			if json.Unmarshal([]byte(l), &p) != nil {
				return nil // torn by a push redone after a restart
			}
			select {
			case ch <- p:
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		}}
		// Not fatal: without it, the push shows as gantryd's lines alone.
		v.src.Progress(ctx, id, true, lw)
		return nil
	})
	return ch, done
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
