// gantry watch without a job: every job's events, one line each.

package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
)

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
	if e.Type == gantry.EventSweep {
		return el.sweepLine(e)
	}
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

// sweepLine is a sweep event's line: the sweep's state, and why it ended.
func (el *eventLines) sweepLine(e gantry.Event) string {
	loc := el.loc
	if loc == nil {
		loc = time.Local
	}
	s := fmt.Sprintf("%s sweep %s %s", e.Time.In(loc).Format(time.RFC3339), e.Sweep, e.State)
	if e.Error != "" {
		s += ": " + e.Error
	}
	if el.text != nil {
		return el.text(s)
	}
	return s
}
