package main

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func TestParseParams(t *testing.T) {
	tests := []struct {
		in   []string
		want []gantry.Param
		err  string
	}{
		{[]string{"LR=0.1,0.01", "SEED=1"}, []gantry.Param{{Name: "LR", Values: []string{"0.1", "0.01"}}, {Name: "SEED", Values: []string{"1"}}}, ""},
		{[]string{"LR"}, nil, "want NAME=V1,V2"},
		{[]string{"=1,2"}, nil, "want NAME=V1,V2"},
		{[]string{"LR="}, nil, "want NAME=V1,V2"},
		{[]string{"LR=1,,2"}, nil, "a value is empty"},
		{[]string{"LR=1,"}, nil, "a value is empty"},
	}
	for _, tt := range tests {
		got, err := parseParams(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseParams(%q): got %v, want an error saying %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Fatalf("parseParams(%q): got %v, %v; want %v", tt.in, got, err, tt.want)
		}
		for i := range got {
			if got[i].Name != tt.want[i].Name || !slices.Equal(got[i].Values, tt.want[i].Values) {
				t.Errorf("parseParams(%q)[%d]: got %v, want %v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func sweepTestView(state gantry.State) *gantry.SweepView {
	f := func(v float64) *float64 { return &v }
	return &gantry.SweepView{
		Sweep: gantry.Sweep{ID: "S1", State: state, Winner: "J2", Jobs: []string{"J1", "J2", "J3"},
			Spec: gantry.SweepSpec{Params: []gantry.Param{{Name: "A", Values: []string{"1", "2", "3"}}}}},
		Objective: "accuracy:max",
		Points: []gantry.SweepPoint{
			{Job: "J2", Params: map[string]string{"A": "2"}, State: gantry.StateSucceeded, Passed: true, Metrics: gantry.Metrics{Accuracy: f(0.97), Values: map[string]float64{"loss": 0.12}}},
			{Job: "J1", Params: map[string]string{"A": "1"}, State: gantry.StateSucceeded, Passed: true, Metrics: gantry.Metrics{Accuracy: f(0.9)}},
			{Job: "J3", Params: map[string]string{"A": "3"}, State: gantry.StateFailed, Error: "training exited with code 1"},
		},
	}
}

func TestPrintLeaderboard(t *testing.T) {
	var b bytes.Buffer
	printLeaderboard(&b, sweepTestView(gantry.StateSucceeded))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 5 || lines[0] != "sweep S1 succeeded: winner J2" {
		t.Fatalf("got\n%s", b.String())
	}
	for i, want := range [][]string{
		{"RANK", "JOB", "A", "ACCURACY:MAX", "OTHER METRICS", "VERDICT"},
		{"*", "1", "J2", "2", "0.9700", "loss=0.12", "passed"},
		{"2", "J1", "1", "0.9000", "-", "passed"},
		{"3", "J3", "3", "-", "-", "failed: training exited with code 1"},
	} {
		line := lines[i+1]
		at := 0
		for _, w := range want {
			n := strings.Index(line[at:], w)
			if n < 0 {
				t.Errorf("line %d %q: want %q after column %d", i+1, line, w, at)
				break
			}
			at += n + len(w)
		}
	}
}

// sweepFakeSource serves a sweep that ends after the events it sends.
type sweepFakeSource struct {
	mu     sync.Mutex
	views  []*gantry.SweepView // served in turn; the last one again
	events []gantry.Event
	since  uint64
}

func (s *sweepFakeSource) ListSweeps(ctx context.Context, limit int) (api.SweepList, error) {
	return api.SweepList{EventSeq: 7}, nil
}

func (s *sweepFakeSource) GetSweep(ctx context.Context, id string) (*gantry.SweepView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.views[0]
	if len(s.views) > 1 {
		s.views = s.views[1:]
	}
	return v, nil
}

func (s *sweepFakeSource) Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error {
	s.mu.Lock()
	s.since = since
	s.mu.Unlock()
	for _, e := range s.events {
		if err := fn(e); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestWaitSweep(t *testing.T) {
	for _, tt := range []struct {
		state gantry.State
		code  int
	}{{gantry.StateSucceeded, 0}, {gantry.StateRejected, exitRejected}, {gantry.StateFailed, exitFailed}, {gantry.StateCanceled, exitCanceled}} {
		src := &sweepFakeSource{
			views: []*gantry.SweepView{sweepTestView(gantry.StateRunning), sweepTestView(tt.state)},
			events: []gantry.Event{
				{Job: "OTHER", Type: gantry.EventState, State: gantry.StateFailed},
				{Job: "J3", Type: gantry.EventState, State: gantry.StateFailed},
				{Sweep: "S1", Type: gantry.EventSweep, State: tt.state},
			},
		}
		var out, errOut bytes.Buffer
		err := waitSweep(context.Background(), src, "S1", &out, &errOut)
		code := 0
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if err != nil {
			t.Fatalf("waitSweep: %v", err)
		}
		if code != tt.code || !strings.HasPrefix(out.String(), "sweep S1 "+string(tt.state)) {
			t.Errorf("%s: exit %d, out %q; want exit %d and the leaderboard", tt.state, code, out.String(), tt.code)
		}
		if src.since != 7 || strings.Contains(errOut.String(), "OTHER") || !strings.Contains(errOut.String(), "point J3 failed") {
			t.Errorf("%s: followed since %d, said %q", tt.state, src.since, errOut.String())
		}
	}
}

func TestSweepEventLine(t *testing.T) {
	el := &eventLines{loc: time.UTC}
	got := el.line(gantry.Event{Time: time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC), Type: gantry.EventSweep, Sweep: "S1", State: gantry.StateRejected, Error: "no point passed its gates"})
	if want := "2026-11-30T03:00:00Z sweep S1 rejected: no point passed its gates"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
