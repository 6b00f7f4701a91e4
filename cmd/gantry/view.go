// The view of one job: where it is drawn (a terminal, with BuildKit's
// display for the build, or plain lines) and how each line of its log is
// shown.

package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/containerd/console"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"

	"github.com/gantry-ml/gantry/internal/joblog"
)

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

	bar   bool  // a push bar is on the current line
	meter meter // the push's rate
}

// newView returns the view of a job for a command writing to out and errOut:
// the live one when either is a terminal (drawn on that terminal, stderr
// first), else plain lines on errOut; quiet shows nothing but the outcome,
// raw the log's bytes as they are.
func newView(src jobSource, out, errOut io.Writer, quiet, raw bool) *view {
	v := &view{src: src, out: out, progress: errOut, raw: raw, now: time.Now}
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

// ownLine shows one line of gantryd's, dimmed (and escaped: it may quote
// what a job or a registry said).
func (v *view) ownLine(l string) {
	v.endBar()
	fmt.Fprintf(v.progress, "%s%s%s\n", dim, escape(l), reset)
}
