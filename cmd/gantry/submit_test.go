package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// The spec gantry submit sends is what its flags say: build args as docker
// build reads them, a gate only when one was asked (0 included), sizes and
// timeouts in the spec's units; a flag at fault is named.
func TestBuildSpec(t *testing.T) {
	t.Setenv("FROM_ENV", "env value")
	dir := t.TempDir()
	zero, gate := 0.0, 0.95
	tests := []struct {
		name    string
		flags   submitFlags
		want    gantry.Spec
		wantErr string // a part of the error; "" for none
		kind    error  // the error's kind, when it has one
	}{
		{
			name: "no flags",
			want: gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{}}},
		},
		{
			name: "spec fields pass through",
			flags: submitFlags{spec: gantry.Spec{
				Build:       gantry.BuildSpec{Target: "train"},
				Push:        []string{"reg/x:latest"},
				MetricRegex: `acc=(\S+)`,
				Promote:     "champion",
			}},
			want: gantry.Spec{
				Build:       gantry.BuildSpec{Dockerfile: "Dockerfile", Target: "train", BuildArgs: map[string]string{}},
				Push:        []string{"reg/x:latest"},
				MetricRegex: `acc=(\S+)`,
				Promote:     "champion",
			},
		},
		{
			name:  "a Dockerfile in the context",
			flags: submitFlags{dockerfile: filepath.Join(dir, "docker", "Dockerfile.train")},
			want:  gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "docker/Dockerfile.train", BuildArgs: map[string]string{}}},
		},
		{
			name:    "a Dockerfile outside the context",
			flags:   submitFlags{dockerfile: filepath.Join(filepath.Dir(dir), "Dockerfile")},
			wantErr: "must be inside the build context",
		},
		{
			name:  "build args: a value, an empty value, from the environment, unset",
			flags: submitFlags{buildArgs: []string{"A=1", "B=", "FROM_ENV", "NOT_SET_ANYWHERE", "C=x=y"}},
			want: gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{
				"A": "1", "B": "", "FROM_ENV": "env value", "C": "x=y",
			}}},
		},
		{
			name:  "a gate of 0 when asked",
			flags: submitFlags{minAccuracySet: true},
			want:  gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{}}, MinAccuracy: &zero},
		},
		{
			name:  "no gate unless asked",
			flags: submitFlags{minAccuracy: 0.95},
			want:  gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{}}},
		},
		{
			name:  "a gate",
			flags: submitFlags{minAccuracy: 0.95, minAccuracySet: true},
			want:  gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{}}, MinAccuracy: &gate},
		},
		{
			name: "sizes and timeouts",
			flags: submitFlags{
				memory: "2g", maxLog: "64m",
				timeouts: [3]time.Duration{time.Minute, time.Hour, 30 * time.Second},
				spec:     gantry.Spec{Resources: gantry.Resources{CPUs: 1.5, PidsLimit: 64}},
			},
			want: gantry.Spec{
				Build:     gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{}},
				Resources: gantry.Resources{Memory: 2 << 30, LogBytes: 64 << 20, CPUs: 1.5, PidsLimit: 64},
				Timeouts: gantry.Timeouts{
					Build: gantry.Duration(time.Minute), Train: gantry.Duration(time.Hour), Push: gantry.Duration(30 * time.Second),
				},
			},
		},
		{
			name:    "a memory limit that is not a size",
			flags:   submitFlags{memory: "lots"},
			wantErr: "--memory: ",
			kind:    gantry.ErrInvalid,
		},
		{
			name:    "a log size that is not a size",
			flags:   submitFlags{maxLog: "12q"},
			wantErr: "--max-log: ",
			kind:    gantry.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildSpec(dir, tt.flags)
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("buildSpec: err = %v, want one saying %q", err, tt.wantErr)
				}
				if tt.kind != nil && gantry.Kind(err) != tt.kind {
					t.Errorf("buildSpec: kind of %v = %v, want %v", err, gantry.Kind(err), tt.kind)
				}
			case err != nil:
				t.Fatalf("buildSpec: %v", err)
			case !reflect.DeepEqual(got, tt.want):
				t.Errorf("buildSpec:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// --secret-env takes each value from the shell's environment (an empty one
// too), and names the variable that is not set.
func TestSecretValues(t *testing.T) {
	env := map[string]string{"TOKEN": "s3cr3t", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got, err := secretValues([]string{"TOKEN", "EMPTY"}, lookup)
	if err != nil || !reflect.DeepEqual(got, env) {
		t.Errorf("secretValues = %v, %v; want both values", got, err)
	}
	if got, err := secretValues(nil, lookup); got != nil || err != nil {
		t.Errorf("secretValues(none) = %v, %v; want nothing", got, err)
	}
	_, err = secretValues([]string{"TOKEN", "MISSING"}, lookup)
	if want := "--secret-env MISSING: MISSING is not set in this shell's environment"; err == nil || err.Error() != want {
		t.Errorf("secretValues(an unset name): %v, want %q", err, want)
	}
}
