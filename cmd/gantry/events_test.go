package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

func TestEventLines(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	acc := 0.93333
	el := &eventLines{loc: time.UTC}
	tests := []struct {
		e    gantry.Event
		want string
	}{
		{gantry.Event{Time: t0, Job: "a", Type: gantry.EventState, State: gantry.StateQueued},
			"2025-06-01T10:00:00Z a queued"},
		{gantry.Event{Time: t0.Add(time.Second), Job: "a", Type: gantry.EventState, State: gantry.StateRunning},
			"2025-06-01T10:00:01Z a running"},
		{gantry.Event{Time: t0.Add(2 * time.Second), Job: "a", Type: gantry.EventAccuracy, Accuracy: &acc},
			"2025-06-01T10:00:02Z a running accuracy 0.9333"},
		{gantry.Event{Time: t0.Add(3 * time.Second), Job: "a", Type: gantry.EventPush, Push: &gantry.Push{Ref: "reg/x:1", Digest: "sha256:d1"}},
			"2025-06-01T10:00:03Z a running accuracy 0.9333 pushed reg/x:1@sha256:d1"},
		{gantry.Event{Time: t0.Add(4 * time.Second), Job: "a", Type: gantry.EventState, State: gantry.StateSucceeded},
			"2025-06-01T10:00:04Z a succeeded accuracy 0.9333"},
		{gantry.Event{Time: t0, Job: "b", Type: gantry.EventState, State: gantry.StateFailed, Error: "training exited with code 3"},
			"2025-06-01T10:00:00Z b failed: training exited with code 3"},
		{gantry.Event{Time: t0, Job: "c", Type: gantry.EventPush, Push: &gantry.Push{Ref: "reg/y:1", Digest: "sha256:d2"}},
			"2025-06-01T10:00:00Z c - pushed reg/y:1@sha256:d2"}, // a job first seen by a push: its state is not known
		{gantry.Event{Time: t0, Job: "c", Type: "paused"},
			"2025-06-01T10:00:00Z c - paused"}, // a kind of event this client does not know
	}
	for i, tt := range tests {
		if got := el.line(tt.e); got != tt.want {
			t.Errorf("event %d: line\n got %q\nwant %q", i, got, tt.want)
		}
	}
}

// fakeEvents is a hand-written eventSource.
type fakeEvents struct {
	events func(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error
}

func (f *fakeEvents) Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error {
	return f.events(ctx, since, job, follow, fn)
}

// Without a job, watch shows the jobs that have not ended (their events so
// far) and then every new event, joining a broken stream again where it
// left off, until interrupted.
func TestWatchAll(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	acc := 0.95
	n := uint64(0)
	ev := func(job, typ string, s gantry.State) gantry.Event {
		n++
		return gantry.Event{Seq: n, Time: t0.Add(time.Duration(n) * time.Second), Job: job, Type: typ, State: s}
	}
	history := []gantry.Event{
		ev("a", gantry.EventState, gantry.StateQueued),
		ev("a", gantry.EventState, gantry.StateBuilding),
		ev("b", gantry.EventState, gantry.StateQueued),
		ev("a", gantry.EventState, gantry.StateRunning),
		ev("a", gantry.EventState, gantry.StateSucceeded),
		ev("b", gantry.EventState, gantry.StateBuilding),
		ev("c", gantry.EventState, gantry.StateQueued),
		ev("c", gantry.EventState, gantry.StateFailed),
		ev("a", gantry.EventPush, ""), // gantry push again, after the end: a stays out
	}
	history[len(history)-1].Push = &gantry.Push{Ref: "reg/a:1", Digest: "sha256:aa"}
	history[7].Error = "build failed"
	live := []gantry.Event{
		ev("b", gantry.EventState, gantry.StateRunning),
		ev("b", gantry.EventAccuracy, ""),
		ev("b", gantry.EventState, gantry.StateSucceeded),
		ev("d", gantry.EventState, gantry.StateQueued),
	}
	live[1].Accuracy = &acc

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls []string
	src := &fakeEvents{events: func(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error {
		calls = append(calls, fmt.Sprintf("since %d follow %v", since, follow))
		if job != "" {
			t.Errorf("events of job %q, want every job's", job)
		}
		var send []gantry.Event
		switch {
		case !follow:
			send = history
		case since == 9: // the stream breaks after one event
			for _, e := range live[:1] {
				fn(e)
			}
			return errors.New("unexpected EOF")
		default:
			for _, e := range live {
				if e.Seq > since {
					send = append(send, e)
				}
			}
		}
		for _, e := range send {
			if err := fn(e); err != nil {
				return err
			}
		}
		if follow {
			cancel() // interrupted
		}
		return ctx.Err()
	}}
	var out, errOut bytes.Buffer
	if err := watchAll(ctx, src, &out, &errOut, time.Millisecond, escape); err != nil {
		t.Fatalf("watchAll: %v", err)
	}
	ts := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Local().Format(time.RFC3339) }
	want := strings.Join([]string{
		ts(3) + " b queued",
		ts(6) + " b building",
		ts(10) + " b running",
		ts(11) + " b running accuracy 0.9500",
		ts(12) + " b succeeded accuracy 0.9500",
		ts(13) + " d queued",
	}, "\n") + "\n"
	if out.String() != want {
		t.Errorf("stdout\n got %q\nwant %q", out.String(), want)
	}
	if wantCalls := "since 0 follow false|since 9 follow true|since 10 follow true"; strings.Join(calls, "|") != wantCalls {
		t.Errorf("event stream calls %q, want %q", calls, wantCalls)
	}
	if n := strings.Count(errOut.String(), "event stream broke"); n != 1 {
		t.Errorf("stderr says the stream broke %d times, want once:\n%s", n, errOut.String())
	}
}
