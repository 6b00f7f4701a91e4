package gantry

import (
	"errors"
	"testing"
)

func TestKeptOutputs(t *testing.T) {
	kept := &Outputs{Dir: "/output", Files: []OutputFile{{Path: "model.bin"}}}
	tests := []struct {
		name    string
		state   State
		outs    *Outputs
		want    *Outputs
		wantErr error
		msg     string
	}{
		{"kept", StateSucceeded, kept, kept, nil, ""},
		{"kept, still pushing", StatePushing, kept, kept, nil, ""},
		{"running", StateRunning, nil, nil, ErrConflict, "job J is running: its outputs are copied when training ends"},
		{"queued", StateQueued, nil, nil, ErrConflict, "job J is queued: its outputs are copied when training ends"},
		{"failed at the build", StateFailed, nil, nil, ErrNotFound, "job J kept no outputs: it ended failed before they were copied"},
		{"copy failed", StateFailed, &Outputs{Dir: "/output", Error: "too big"}, nil, ErrNotFound, "job J kept no outputs: too big"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := &Job{ID: "J", State: tc.state, Outputs: tc.outs}
			got, err := j.KeptOutputs()
			if got != tc.want || !errors.Is(err, tc.wantErr) || (err != nil && err.Error() != tc.msg) {
				t.Errorf("KeptOutputs = %v, %v; want %v, %q (%v)", got, err, tc.want, tc.msg, tc.wantErr)
			}
		})
	}
}
