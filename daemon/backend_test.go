package daemon

import (
	"context"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// TestLostTraining has the backend lose a run (a node went down) and checks
// that the job is tried again while its --retries allow, each loss an
// attempt in the record, and fails "node lost" beyond them; a run the
// user's program ended is never tried again.
func TestLostTraining(t *testing.T) {
	const trained = "Epoch 1/1 loss=0.21\nModel accuracy: 0.9667\n"
	lost := runner.Exit{Lost: "node w2 (abc) is down"}
	tests := []struct {
		name         string
		retries      int
		exits        []runner.Exit // the runs' ends, in turn
		wantState    gantry.State
		wantErr      string
		wantAttempts int
	}{
		{name: "retried", retries: 1, exits: []runner.Exit{lost, {}}, wantState: gantry.StateSucceeded, wantAttempts: 1},
		{name: "retried twice", retries: 3, exits: []runner.Exit{lost, lost, {}}, wantState: gantry.StateSucceeded, wantAttempts: 2},
		{name: "no retries", exits: []runner.Exit{lost}, wantState: gantry.StateFailed, wantErr: "node lost: node w2 (abc) is down"},
		{name: "retries spent", retries: 1, exits: []runner.Exit{lost, lost}, wantState: gantry.StateFailed, wantErr: "node lost", wantAttempts: 1},
		{name: "the program's failure", retries: 2, exits: []runner.Exit{{Code: 3}}, wantState: gantry.StateFailed, wantErr: "exited with code 3"},
		{name: "probably out of memory", exits: []runner.Exit{{Code: 137, OOMProbable: true}}, wantState: gantry.StateFailed, wantErr: "probably out of memory, under a memory limit of 64m"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := pipeNewFakes(t)
			var runs atomic.Int32
			f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
				n := int(runs.Add(1)) - 1
				if n >= len(tc.exits) {
					t.Errorf("run %d: the test gave %d", n+1, len(tc.exits))
					return runner.Exit{Code: 99}, nil
				}
				io.WriteString(out, trained)
				return tc.exits[n], nil
			}
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)
			spec := gantry.Spec{Resources: gantry.Resources{Memory: 64 << 20}}
			spec.Run.Retries = tc.retries
			j := pipeSubmit(t, rig.d, spec)
			end := pipeWait(t, rig.d, j.ID)
			if end.State != tc.wantState || !strings.Contains(end.Error, tc.wantErr) {
				t.Fatalf("ended %s (%q), want %s with %q", end.State, end.Error, tc.wantState, tc.wantErr)
			}
			if got := int(runs.Load()); got != len(tc.exits) {
				t.Errorf("%d runs, want %d", got, len(tc.exits))
			}
			if len(end.Attempts) != tc.wantAttempts {
				t.Fatalf("attempts %+v, want %d", end.Attempts, tc.wantAttempts)
			}
			for _, a := range end.Attempts {
				if a.Reason != lost.Lost || a.Placement.Node != "pipe" || a.Started == nil {
					t.Errorf("attempt %+v: want the loss, its node and when it started", a)
				}
			}
			if p := end.Placement; p == nil || p.Backend != gantry.BackendLocal || p.Node != "pipe" {
				t.Errorf("placement %+v, want the node the backend reported", p)
			}
			if got := len(f.engine.specs()); got != len(tc.exits) {
				t.Errorf("%d runs created, want one per run (%d)", got, len(tc.exits))
			}
			log, _ := os.ReadFile(rig.d.LogPath(j.ID))
			if n := strings.Count(string(log), "trying again"); n != tc.wantAttempts {
				t.Errorf("the log says %d times that it tries again, want %d:\n%s", n, tc.wantAttempts, log)
			}
		})
	}
}

// TestNodes lists the backend's one node with the job that trains there.
func TestNodesListsJobsWhereTheyTrain(t *testing.T) {
	p := gantry.Placement{Backend: gantry.BackendSwarm, NodeID: "n2", Node: "w2"}
	if !onNode(p, gantry.Node{ID: "n2"}) || onNode(p, gantry.Node{ID: "n1"}) {
		t.Errorf("a swarm placement is on its node, and only there")
	}
	local := gantry.Placement{Backend: gantry.BackendLocal, Node: "h"}
	if !onNode(local, gantry.Node{ID: "x"}) {
		t.Errorf("a local placement is on the engine's one node")
	}
	if onNode(gantry.Placement{Backend: gantry.BackendSwarm, Waiting: "no suitable node"}, gantry.Node{ID: "n1"}) {
		t.Errorf("a run that waits for a node is on none")
	}
}
