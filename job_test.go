package gantry

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// legal is the state machine written out edge by edge, every pair of states
// included, so that a change to transitions must be made here too.
var legal = []struct {
	from, to State
	ok       bool
}{
	{StateQueued, StateQueued, false},
	{StateQueued, StateBuilding, true},
	{StateQueued, StateRunning, false},
	{StateQueued, StatePushing, false},
	{StateQueued, StateSucceeded, false},
	{StateQueued, StateRejected, false},
	{StateQueued, StateFailed, true},
	{StateQueued, StateCanceled, true},

	{StateBuilding, StateQueued, false},
	{StateBuilding, StateBuilding, false},
	{StateBuilding, StateRunning, true},
	{StateBuilding, StatePushing, false},
	{StateBuilding, StateSucceeded, false},
	{StateBuilding, StateRejected, false},
	{StateBuilding, StateFailed, true},
	{StateBuilding, StateCanceled, true},

	{StateRunning, StateQueued, false},
	{StateRunning, StateBuilding, false},
	{StateRunning, StateRunning, false},
	{StateRunning, StatePushing, true},
	{StateRunning, StateSucceeded, true},
	{StateRunning, StateRejected, true},
	{StateRunning, StateFailed, true},
	{StateRunning, StateCanceled, true},

	{StatePushing, StateQueued, false},
	{StatePushing, StateBuilding, false},
	{StatePushing, StateRunning, false},
	{StatePushing, StatePushing, false},
	{StatePushing, StateSucceeded, true},
	{StatePushing, StateRejected, false},
	{StatePushing, StateFailed, true},
	{StatePushing, StateCanceled, true},

	{StateSucceeded, StateQueued, false},
	{StateSucceeded, StateBuilding, false},
	{StateSucceeded, StateRunning, false},
	{StateSucceeded, StatePushing, false},
	{StateSucceeded, StateSucceeded, false},
	{StateSucceeded, StateRejected, false},
	{StateSucceeded, StateFailed, false},
	{StateSucceeded, StateCanceled, false},

	{StateRejected, StateQueued, false},
	{StateRejected, StateBuilding, false},
	{StateRejected, StateRunning, false},
	{StateRejected, StatePushing, false},
	{StateRejected, StateSucceeded, false},
	{StateRejected, StateRejected, false},
	{StateRejected, StateFailed, false},
	{StateRejected, StateCanceled, false},

	{StateFailed, StateQueued, false},
	{StateFailed, StateBuilding, false},
	{StateFailed, StateRunning, false},
	{StateFailed, StatePushing, false},
	{StateFailed, StateSucceeded, false},
	{StateFailed, StateRejected, false},
	{StateFailed, StateFailed, false},
	{StateFailed, StateCanceled, false},

	{StateCanceled, StateQueued, false},
	{StateCanceled, StateBuilding, false},
	{StateCanceled, StateRunning, false},
	{StateCanceled, StatePushing, false},
	{StateCanceled, StateSucceeded, false},
	{StateCanceled, StateRejected, false},
	{StateCanceled, StateFailed, false},
	{StateCanceled, StateCanceled, false},
}

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func TestLegalCoversEveryPair(t *testing.T) {
	seen := map[[2]State]int{}
	for _, e := range legal {
		seen[[2]State{e.from, e.to}]++
	}
	for _, from := range States {
		for _, to := range States {
			if n := seen[[2]State{from, to}]; n != 1 {
				t.Errorf("%s -> %s is in the table %d times, want once", from, to, n)
			}
		}
	}
	if want := len(States) * len(States); len(legal) != want {
		t.Errorf("table has %d rows, want %d", len(legal), want)
	}
}

func TestCanMove(t *testing.T) {
	for _, e := range legal {
		if got := CanMove(e.from, e.to); got != e.ok {
			t.Errorf("CanMove(%s, %s) = %v, want %v", e.from, e.to, got, e.ok)
		}
	}
	for _, s := range States {
		if CanMove(s, "paused") || CanMove("paused", s) {
			t.Errorf("CanMove allows a move between %s and an unknown state", s)
		}
	}
}

func TestMove(t *testing.T) {
	for _, e := range legal {
		t.Run(fmt.Sprintf("%s-%s", e.from, e.to), func(t *testing.T) {
			j := NewJob(Spec{}, t0)
			j.State = e.from
			before := *j
			err := j.Move(e.to, t0.Add(time.Second))
			switch {
			case e.ok && err != nil:
				t.Fatalf("Move: %v", err)
			case e.ok && j.State != e.to:
				t.Errorf("state after Move: got %s, want %s", j.State, e.to)
			case !e.ok && !errors.Is(err, ErrConflict):
				t.Errorf("Move: got error %v, want kind %v", err, ErrConflict)
			case !e.ok && !reflect.DeepEqual(*j, before):
				t.Errorf("refused Move changed the job: got %+v, want %+v", *j, before)
			}
		})
	}
}

func TestMoveStampsTimes(t *testing.T) {
	// Each step moves at the next second; a stamp is named by the step
	// number that made it (0 = not set).
	type stamps struct {
		buildStarted, buildFinished, runStarted, runFinished, pushStarted, pushFinished, finished int
	}
	tests := []struct {
		path []State
		want stamps
	}{
		{[]State{StateBuilding}, stamps{buildStarted: 1}},
		{[]State{StateBuilding, StateRunning}, stamps{buildStarted: 1, buildFinished: 2, runStarted: 2}},
		{
			[]State{StateBuilding, StateRunning, StatePushing},
			stamps{buildStarted: 1, buildFinished: 2, runStarted: 2, runFinished: 3, pushStarted: 3},
		},
		{
			[]State{StateBuilding, StateRunning, StatePushing, StateSucceeded},
			stamps{buildStarted: 1, buildFinished: 2, runStarted: 2, runFinished: 3, pushStarted: 3, pushFinished: 4, finished: 4},
		},
		{
			[]State{StateBuilding, StateRunning, StateSucceeded},
			stamps{buildStarted: 1, buildFinished: 2, runStarted: 2, runFinished: 3, finished: 3},
		},
		{
			[]State{StateBuilding, StateRunning, StateRejected},
			stamps{buildStarted: 1, buildFinished: 2, runStarted: 2, runFinished: 3, finished: 3},
		},
		{
			[]State{StateBuilding, StateRunning, StatePushing, StateFailed},
			stamps{buildStarted: 1, buildFinished: 2, runStarted: 2, runFinished: 3, pushStarted: 3, pushFinished: 4, finished: 4},
		},
		{[]State{StateBuilding, StateCanceled}, stamps{buildStarted: 1, buildFinished: 2, finished: 2}},
		{[]State{StateCanceled}, stamps{finished: 1}},
		{[]State{StateFailed}, stamps{finished: 1}},
	}
	// Stamps are kept in UTC whatever zone the caller's clock is in.
	zone := time.FixedZone("UTC+5", 5*60*60)
	for _, tt := range tests {
		name := strings.Trim(strings.ReplaceAll(fmt.Sprint(tt.path), " ", "-"), "[]")
		t.Run(name, func(t *testing.T) {
			j := NewJob(Spec{}, t0)
			for i, to := range tt.path {
				if err := j.Move(to, t0.Add(time.Duration(i+1)*time.Second).In(zone)); err != nil {
					t.Fatalf("Move(%s): %v", to, err)
				}
			}
			check := func(field string, got *time.Time, step int) {
				t.Helper()
				switch {
				case step == 0 && got != nil:
					t.Errorf("%s: got %v, want unset", field, *got)
				case step == 0:
				case got == nil:
					t.Errorf("%s: unset, want step %d", field, step)
				case !got.Equal(t0.Add(time.Duration(step)*time.Second)) || got.Location() != time.UTC:
					t.Errorf("%s: got %v, want %v (step %d)", field, *got, t0.Add(time.Duration(step)*time.Second), step)
				}
			}
			tm := j.Times
			check("Build.Started", tm.Build.Started, tt.want.buildStarted)
			check("Build.Finished", tm.Build.Finished, tt.want.buildFinished)
			check("Run.Started", tm.Run.Started, tt.want.runStarted)
			check("Run.Finished", tm.Run.Finished, tt.want.runFinished)
			check("Push.Started", tm.Push.Started, tt.want.pushStarted)
			check("Push.Finished", tm.Push.Finished, tt.want.pushFinished)
			check("Finished", tm.Finished, tt.want.finished)
			if !tm.Created.Equal(t0) {
				t.Errorf("Created: got %v, want %v", tm.Created, t0)
			}
		})
	}
}

func TestTerminal(t *testing.T) {
	tests := []struct {
		state State
		want  bool
	}{
		{StateQueued, false},
		{StateBuilding, false},
		{StateRunning, false},
		{StatePushing, false},
		{StateSucceeded, true},
		{StateRejected, true},
		{StateFailed, true},
		{StateCanceled, true},
		{"paused", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := tt.state.Terminal(); got != tt.want {
			t.Errorf("%q.Terminal() = %v, want %v", tt.state, got, tt.want)
		}
	}
}

func TestValid(t *testing.T) {
	for _, s := range States {
		if !s.Valid() {
			t.Errorf("%q.Valid() = false, want true", s)
		}
	}
	for _, s := range []State{"", "paused", "Queued", "queued "} {
		if s.Valid() {
			t.Errorf("%q.Valid() = true, want false", s)
		}
	}
}

func TestNewJob(t *testing.T) {
	j := NewJob(Spec{Push: []string{"r/x:1"}}, t0.In(time.FixedZone("UTC-3", -3*60*60)))
	if j.State != StateQueued {
		t.Errorf("State: got %s, want %s", j.State, StateQueued)
	}
	if !ValidID(j.ID) {
		t.Errorf("ID %q is not valid", j.ID)
	}
	if want := "gantry/job:" + j.ID; j.ImageName != want {
		t.Errorf("ImageName: got %q, want %q", j.ImageName, want)
	}
	if !j.Times.Created.Equal(t0) || j.Times.Created.Location() != time.UTC {
		t.Errorf("Created: got %v, want %v", j.Times.Created, t0)
	}
	if !slices.Equal(j.Spec.Push, []string{"r/x:1"}) {
		t.Errorf("Spec.Push: got %v", j.Spec.Push)
	}
}

func TestNewID(t *testing.T) {
	id := NewID(t0)
	if len(id) != 16 {
		t.Errorf("NewID = %q: %d characters, want 16", id, len(id))
	}
	if !ValidID(id) {
		t.Errorf("ValidID(%q) = false", id)
	}
	if other := NewID(t0); other == id {
		t.Errorf("two IDs in the same millisecond are both %q", id)
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	// Neighbouring milliseconds, and the points where the upper 16 bits of
	// the millisecond count change.
	var times []time.Time
	for i := range 2000 {
		times = append(times, t0.Add(time.Duration(i)*time.Millisecond))
	}
	for _, ms := range []int64{0, 1, 1<<32 - 1, 1 << 32, 1<<32 + 1, t0.UnixMilli() + 1e9, 1<<40 - 1, 1 << 40, 1<<47 - 1, 1<<48 - 1} {
		times = append(times, time.UnixMilli(ms))
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })

	prev := ""
	for _, tm := range times {
		id := NewID(tm)
		if !ValidID(id) {
			t.Errorf("NewID(%v) = %q is not valid", tm, id)
		}
		if id <= prev {
			t.Errorf("NewID(%v) = %q does not sort after %q", tm, id, prev)
		}
		prev = id
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"0123456789abcdef", true},
		{"zzzzzzzzzzzzzzzz", true},
		{"0000000000000000", true},
		{"", false},
		{"../etc/passwd", false},
		{"../../etc/passwd", false},
		{"0123456789ABCDEF", false},
		{"0123456789abcdeF", false},
		{"0123456789abcde", false},
		{"0123456789abcdef0", false},
		{"0123456789abcdei", false}, // i, l, o and u are not in the alphabet
		{"0123456789abcdel", false},
		{"0123456789abcdeo", false},
		{"0123456789abcdeu", false},
		{"0123456789abcd/e", false},
		{"0123456789abcde=", false},
		{"0123456789abcde ", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

// TestValidIDRefusesLineBreaks documents a bug: encoding/base32 skips '\r'
// and '\n' while decoding, so ValidID accepts a 16-byte string holding
// them, which is not safe in a file name, label or log line.
func TestValidIDRefusesLineBreaks(t *testing.T) {
	for _, id := range []string{"0123456789abcde\n", "\n123456789abcdef", "0123456789abcd\r\n"} {
		if ValidID(id) {
			t.Errorf("ValidID(%q) = true, want false", id)
		}
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name           string
		spec           Spec
		wantErr        bool
		wantDockerfile string // checked when there is no error
		wantMsg        string // a part of the error message
	}{
		{name: "empty spec", wantDockerfile: "Dockerfile"},
		{name: "dockerfile kept", spec: Spec{Build: BuildSpec{Dockerfile: "train/Dockerfile.gpu"}}, wantDockerfile: "train/Dockerfile.gpu"},
		{name: "dots in a name are fine", spec: Spec{Build: BuildSpec{Dockerfile: "..Dockerfile"}}, wantDockerfile: "..Dockerfile"},
		{name: "absolute dockerfile", spec: Spec{Build: BuildSpec{Dockerfile: "/etc/Dockerfile"}}, wantErr: true, wantMsg: "/etc/Dockerfile"},
		{name: "dockerfile in parent", spec: Spec{Build: BuildSpec{Dockerfile: "../Dockerfile"}}, wantErr: true, wantMsg: "../Dockerfile"},
		{name: "dockerfile escapes via subdir", spec: Spec{Build: BuildSpec{Dockerfile: "a/../../Dockerfile"}}, wantErr: true},
		{name: "dockerfile ends in ..", spec: Spec{Build: BuildSpec{Dockerfile: "a/.."}}, wantErr: true},
		{name: "good build args", spec: Spec{Build: BuildSpec{BuildArgs: map[string]string{"EPOCHS": "10", "A_B": "x=y"}}}, wantDockerfile: "Dockerfile"},
		{name: "empty build arg name", spec: Spec{Build: BuildSpec{BuildArgs: map[string]string{"": "1"}}}, wantErr: true},
		{name: "build arg name with =", spec: Spec{Build: BuildSpec{BuildArgs: map[string]string{"A=B": "1"}}}, wantErr: true, wantMsg: "A=B"},
		{name: "build arg name with space", spec: Spec{Build: BuildSpec{BuildArgs: map[string]string{"A B": "1"}}}, wantErr: true},
		{name: "build arg name with newline", spec: Spec{Build: BuildSpec{BuildArgs: map[string]string{"A\nB": "1"}}}, wantErr: true},
		{name: "min accuracy 0", spec: Spec{MinAccuracy: ptr(0.0)}, wantDockerfile: "Dockerfile"},
		{name: "min accuracy 1", spec: Spec{MinAccuracy: ptr(1.0)}, wantDockerfile: "Dockerfile"},
		{name: "min accuracy 0.95", spec: Spec{MinAccuracy: ptr(0.95)}, wantDockerfile: "Dockerfile"},
		{name: "min accuracy negative", spec: Spec{MinAccuracy: ptr(-0.01)}, wantErr: true, wantMsg: "min_accuracy"},
		{name: "min accuracy above 1", spec: Spec{MinAccuracy: ptr(1.01)}, wantErr: true},
		{name: "min accuracy as a percentage", spec: Spec{MinAccuracy: ptr(95.0)}, wantErr: true},
		{name: "min accuracy NaN", spec: Spec{MinAccuracy: ptr(math.NaN())}, wantErr: true},
		{name: "min accuracy +Inf", spec: Spec{MinAccuracy: ptr(math.Inf(1))}, wantErr: true},
		{name: "push refs accepted", spec: Spec{Push: []string{"r/a:1", "127.0.0.1:5000/b:2", "user/repo"}}, wantDockerfile: "Dockerfile"},
		{name: "push ref refused", spec: Spec{Push: []string{"r/a:1", "NOT A REF"}}, wantErr: true, wantMsg: "NOT A REF"},
		{name: "push to a digest refused", spec: Spec{Push: []string{"r/a@sha256:" + strings.Repeat("a", 64)}}, wantErr: true, wantMsg: "push reference"},
		{name: "timeouts set", spec: Spec{Timeouts: Timeouts{Build: Duration(time.Minute), Train: Duration(time.Hour), Push: 1}}, wantDockerfile: "Dockerfile"},
		{name: "negative build timeout", spec: Spec{Timeouts: Timeouts{Build: Duration(-time.Second)}}, wantErr: true, wantMsg: "build timeout -1s"},
		{name: "negative train timeout", spec: Spec{Timeouts: Timeouts{Train: -1}}, wantErr: true, wantMsg: "train timeout"},
		{name: "negative push timeout", spec: Spec{Timeouts: Timeouts{Push: Duration(-time.Minute)}}, wantErr: true, wantMsg: "push timeout"},
		{name: "resources set", spec: Spec{Resources: Resources{Memory: 2 << 30, CPUs: 0.5, PidsLimit: 100}}, wantDockerfile: "Dockerfile"},
		{name: "memory at the engine's minimum", spec: Spec{Resources: Resources{Memory: 6 << 20}}, wantDockerfile: "Dockerfile"},
		{name: "memory below the engine's minimum", spec: Spec{Resources: Resources{Memory: 6<<20 - 1}}, wantErr: true, wantMsg: "6 MiB"},
		{name: "memory of one byte", spec: Spec{Resources: Resources{Memory: 1}}, wantErr: true, wantMsg: "memory limit 1 bytes"},
		{name: "negative memory", spec: Spec{Resources: Resources{Memory: -1}}, wantErr: true, wantMsg: "must not be negative"},
		{name: "negative cpus", spec: Spec{Resources: Resources{CPUs: -0.5}}, wantErr: true, wantMsg: "must not be negative"},
		{name: "NaN cpus", spec: Spec{Resources: Resources{CPUs: math.NaN()}}, wantErr: true},
		{name: "negative pids limit", spec: Spec{Resources: Resources{PidsLimit: -1}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			err := s.Validate()
			switch {
			case !tt.wantErr && err != nil:
				t.Fatalf("Validate: %v", err)
			case !tt.wantErr && s.Build.Dockerfile != tt.wantDockerfile:
				t.Errorf("Dockerfile after Validate: got %q, want %q", s.Build.Dockerfile, tt.wantDockerfile)
			case tt.wantErr && !errors.Is(err, ErrInvalid):
				t.Errorf("Validate: got error %v, want kind %v", err, ErrInvalid)
			case tt.wantErr && Kind(err) != ErrInvalid:
				t.Errorf("Kind(%v) = %v, want %v", err, Kind(err), ErrInvalid)
			case tt.wantErr && !strings.Contains(err.Error(), tt.wantMsg):
				t.Errorf("Validate error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestSpecValidateRefusesInfiniteCPUs: an infinite CPU count, like a NaN
// one, is no limit the engine can take.
func TestSpecValidateRefusesInfiniteCPUs(t *testing.T) {
	s := Spec{Resources: Resources{CPUs: math.Inf(1)}}
	if err := s.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate with cpus +Inf: got %v, want kind %v", err, ErrInvalid)
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "100", want: 100},
		{in: "10b", want: 10},
		{in: "1.5k", want: 1536},
		{in: "8K", want: 8 << 10},
		{in: "512m", want: 512 << 20},
		{in: "512M", want: 512 << 20},
		{in: "6m", want: 6 << 20},
		{in: "2g", want: 2 << 30},
		{in: "0.5g", want: 512 << 20},
		{in: " 1g ", want: 1 << 30},
		{in: "1kb", want: 1 << 10},
		{in: "abc", wantErr: true},
		{in: "m", wantErr: true},
		{in: "b", wantErr: true},
		{in: " ", wantErr: true},
		{in: "-1m", wantErr: true},
		{in: "-5", wantErr: true},
		{in: "12x", wantErr: true},
		{in: "1.2.3m", wantErr: true},
		{in: "1t", wantErr: true},
		{in: "1bb", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "inf", wantErr: true},
		{in: "1e30g", wantErr: true},
		{in: "9999999999g", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		switch {
		case tt.wantErr && !errors.Is(err, ErrInvalid):
			t.Errorf("ParseBytes(%q) = %d, %v; want an error of kind %v", tt.in, got, err, ErrInvalid)
		case tt.wantErr && !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)):
			t.Errorf("ParseBytes(%q) error %q does not quote the input", tt.in, err)
		case !tt.wantErr && (err != nil || got != tt.want):
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		json string
	}{
		{0, `"0s"`},
		{time.Nanosecond, `"1ns"`},
		{50 * time.Millisecond, `"50ms"`},
		{90 * time.Second, `"1m30s"`},
		{2*time.Hour + 30*time.Minute, `"2h30m0s"`},
		{-time.Second, `"-1s"`},
		{math.MaxInt64, `"2562047h47m16.854775807s"`},
	} {
		b, err := json.Marshal(Duration(tt.d))
		if err != nil || string(b) != tt.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.d, b, err, tt.json)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != tt.d {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", b, time.Duration(back), err, tt.d)
		}
	}

	// Written by hand: any Go duration string.
	for in, want := range map[string]time.Duration{`"10m"`: 10 * time.Minute, `"1h"`: time.Hour, `"1.5s"`: 1500 * time.Millisecond, `"300ms"`: 300 * time.Millisecond} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}

	for _, in := range []string{`90`, `"10"`, `"ten minutes"`, `"1x"`, `""`, `true`, `{}`, `"1h"x`} {
		d := Duration(time.Minute)
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("Unmarshal(%s) = %v, want an error", in, time.Duration(d))
		}
	}

	// In a spec: limits left at zero are left out.
	b, err := json.Marshal(Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "timeouts") || strings.Contains(s, "resources") {
		t.Errorf("Marshal(Spec{}) = %s, want no timeouts or resources", s)
	}
	spec := Spec{
		Timeouts:  Timeouts{Build: Duration(30 * time.Minute), Push: Duration(90 * time.Second)},
		Resources: Resources{Memory: 512 << 20, CPUs: 1.5},
	}
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if want := `"timeouts":{"build":"30m0s","push":"1m30s"},"resources":{"memory":536870912,"cpus":1.5}`; !strings.Contains(string(b), want) {
		t.Errorf("Marshal(spec) = %s, want it to hold %s", b, want)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, spec) {
		t.Errorf("Unmarshal(%s) = %+v, %v; want %+v", b, back, err, spec)
	}
}

// TestDurationJSONNull: encoding/json's convention is that an Unmarshaler
// takes null as "no value" and does nothing.
func TestDurationJSONNull(t *testing.T) {
	var s Spec
	if err := json.Unmarshal([]byte(`{"timeouts":{"build":null,"train":"1h"}}`), &s); err != nil {
		t.Fatalf("Unmarshal with a null timeout: %v", err)
	}
	if want := (Timeouts{Train: Duration(time.Hour)}); s.Timeouts != want {
		t.Errorf("timeouts = %+v, want %+v", s.Timeouts, want)
	}
}
