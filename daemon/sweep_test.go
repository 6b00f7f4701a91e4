package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/runner"
)

const sweepRef = "registry.example/iris:best"

// sweepGrid is a 3x2 grid: accuracy A*0.1 + B*0.01 (sweepTrain).
var sweepGrid = []gantry.Param{{Name: "A", Values: []string{"1", "3", "2"}}, {Name: "B", Values: []string{"5", "7"}}}

// sweepTrain makes the fake engine print the accuracy of each point: A*0.1
// + B*0.01, read from the container's environment.
func sweepTrain(f pipeFakes) {
	f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		var a, b float64
		for _, s := range f.engine.specs() {
			if pipeContainerID(s.Labels[runner.LabelJob]) != id {
				continue
			}
			for _, kv := range s.Env {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseFloat(v, 64)
				switch k {
				case "A":
					a = n
				case "B":
					b = n
				}
			}
		}
		fmt.Fprintf(out, "Model accuracy: %.4f\n", a*0.1+b*0.01)
		return runner.Exit{}, nil
	}
}

func sweepSubmit(t *testing.T, d *Daemon, spec gantry.SweepSpec) *gantry.Sweep {
	t.Helper()
	sw, err := d.SubmitSweep(context.Background(), spec, nil, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("SubmitSweep: %v", err)
	}
	return sw
}

// sweepWait waits for sweep id to end and returns its view.
func sweepWait(t *testing.T, d *Daemon, id string) *gantry.SweepView {
	t.Helper()
	var v *gantry.SweepView
	pipeEventually(t, "sweep "+id+" to end", func() bool {
		var err error
		if v, err = d.GetSweep(context.Background(), id); err != nil {
			t.Fatalf("GetSweep: %v", err)
		}
		return v.Sweep.State.Terminal()
	})
	return v
}

// sweepPointOf returns the job of view v whose params are a, b.
func sweepPointOf(t *testing.T, v *gantry.SweepView, a, b string) string {
	t.Helper()
	for _, p := range v.Points {
		if p.Params["A"] == a && p.Params["B"] == b {
			return p.Job
		}
	}
	t.Fatalf("no point A=%s B=%s in %s", a, b, pipeJSON(v.Points))
	return ""
}

func TestSweep(t *testing.T) {
	tests := []struct {
		name      string
		promoteOn string
		min       *float64
		wantState gantry.State
		wantWin   [2]string // A, B of the winner; "" for none
		wantOrder []string  // the leaderboard's A,B pairs
	}{
		{"max", "", nil, gantry.StateSucceeded, [2]string{"3", "7"},
			[]string{"3,7", "3,5", "2,7", "2,5", "1,7", "1,5"}},
		{"min", "accuracy:min", nil, gantry.StateSucceeded, [2]string{"1", "5"},
			[]string{"1,5", "1,7", "2,5", "2,7", "3,5", "3,7"}},
		{"gate leaves two", "accuracy:min", pipeFloat(0.3), gantry.StateSucceeded, [2]string{"3", "5"},
			[]string{"3,5", "3,7", "1,5", "1,7", "2,5", "2,7"}},
		{"none passed", "", pipeFloat(0.99), gantry.StateRejected, [2]string{},
			[]string{"1,5", "1,7", "3,5", "3,7", "2,5", "2,7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := pipeNewFakes(t)
			sweepTrain(f)
			r := pipeNewRig(t, 2, f)
			pipeRun(t, r.d)
			spec := gantry.SweepSpec{Job: gantry.Spec{Push: []string{sweepRef}, PromoteOn: tt.promoteOn, MinAccuracy: tt.min, Run: gantry.RunSpec{Env: []string{"KEEP=1"}}}, Params: sweepGrid}
			sw := sweepSubmit(t, r.d, spec)
			if len(sw.Jobs) != 6 {
				t.Fatalf("jobs: got %d, want 6", len(sw.Jobs))
			}
			v := sweepWait(t, r.d, sw.ID)
			if v.Sweep.State != tt.wantState {
				t.Fatalf("state: got %s (%s), want %s", v.Sweep.State, v.Sweep.Error, tt.wantState)
			}
			var order []string
			for _, p := range v.Points {
				order = append(order, p.Params["A"]+","+p.Params["B"])
			}
			if !slices.Equal(order, tt.wantOrder) {
				t.Errorf("leaderboard: got %v, want %v", order, tt.wantOrder)
			}
			// Grid order, each point's environment, one build, one image.
			wantEnv := [][]string{{"1", "5"}, {"1", "7"}, {"3", "5"}, {"3", "7"}, {"2", "5"}, {"2", "7"}}
			for i, id := range sw.Jobs {
				j := pipeWait(t, r.d, id)
				want := []string{"KEEP=1", "A=" + wantEnv[i][0], "B=" + wantEnv[i][1]}
				if !slices.Equal(j.Spec.Run.Env, want) || len(j.Spec.Push) != 0 || j.Sweep != sw.ID {
					t.Errorf("job %d: env %v push %v sweep %q, want env %v, no push, sweep %s", i, j.Spec.Run.Env, j.Spec.Push, j.Sweep, want, sw.ID)
				}
				if j.Image != v.Sweep.Image || j.Image == "" {
					t.Errorf("job %d: image %q, want the sweep's %q", i, j.Image, v.Sweep.Image)
				}
			}
			reqs, _ := f.builder.built()
			if len(reqs) != 1 || reqs[0].ContextDir != filepath.Join(r.dir, "contexts", sw.ID) {
				t.Fatalf("builds: got %d (%v), want one from the sweep's context", len(reqs), reqs)
			}
			if pipeExists(t, filepath.Join(r.dir, "contexts", sw.ID)) {
				t.Errorf("the sweep's context is left behind")
			}
			pushes := f.pusher.pushCalls()
			if tt.wantWin[0] == "" {
				if v.Sweep.Winner != "" || len(pushes) != 0 || !strings.Contains(v.Sweep.Error, "no point passed") {
					t.Errorf("winner %q, %d pushes, error %q: want none, none, and why", v.Sweep.Winner, len(pushes), v.Sweep.Error)
				}
				return
			}
			win := sweepPointOf(t, v, tt.wantWin[0], tt.wantWin[1])
			if v.Sweep.Winner != win || v.Points[0].Job != win {
				t.Errorf("winner: got %s, want %s (A=%s B=%s)", v.Sweep.Winner, win, tt.wantWin[0], tt.wantWin[1])
			}
			wantRefs := []string{sweepRef, "registry.example/iris:job-" + win}
			if len(pushes) != 1 || !slices.Equal(pushes[0].refs, wantRefs) {
				t.Fatalf("pushes: got %d (%v), want one to %v", len(pushes), pushes, wantRefs)
			}
			if u := f.pusher.uploadCalls(); len(u) != 0 {
				t.Errorf("uploads: got %v, want none (only the winner pushes, once chosen)", u)
			}
			if j := pipeWait(t, r.d, win); len(j.Pushes) != 2 {
				t.Errorf("winner's pushes: got %v, want 2", j.Pushes)
			}
		})
	}
}

func TestSweepBuildFailureFailsEveryPoint(t *testing.T) {
	f := pipeNewFakes(t)
	f.builder.build = func(ctx context.Context, r builder.Request, progress io.Writer) (string, error) {
		return "", errors.New("build failed at step 2/3: no such file train.py")
	}
	r := pipeNewRig(t, 3, f)
	pipeRun(t, r.d)
	sw := sweepSubmit(t, r.d, gantry.SweepSpec{Job: gantry.Spec{Push: []string{sweepRef}}, Params: sweepGrid})
	v := sweepWait(t, r.d, sw.ID)
	if v.Sweep.State != gantry.StateFailed || !strings.Contains(v.Sweep.Error, "step 2/3") {
		t.Errorf("sweep: %s %q, want failed with the build's error", v.Sweep.State, v.Sweep.Error)
	}
	for _, id := range sw.Jobs {
		if j := pipeWait(t, r.d, id); j.State != gantry.StateFailed || !strings.Contains(j.Error, "step 2/3") {
			t.Errorf("job %s: %s %q, want failed with the build's error", id, j.State, j.Error)
		}
	}
	if reqs, _ := f.builder.built(); len(reqs) != 1 {
		t.Errorf("builds: got %d, want 1", len(reqs))
	}
	if n := len(f.pusher.pushCalls()); n != 0 {
		t.Errorf("pushes: got %d, want 0", n)
	}
}

func TestCancelSweep(t *testing.T) {
	f := pipeNewFakes(t)
	running := make(chan string, 6)
	f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		running <- id
		<-ctx.Done()
		return runner.Exit{}, ctx.Err()
	}
	r := pipeNewRig(t, 2, f)
	pipeRun(t, r.d)
	sw := sweepSubmit(t, r.d, gantry.SweepSpec{Job: gantry.Spec{Push: []string{sweepRef}}, Params: sweepGrid})
	pipeReceive(t, "a point training", running)
	got, err := r.d.CancelSweep(context.Background(), sw.ID)
	if err != nil || got.State != gantry.StateCanceled {
		t.Fatalf("CancelSweep: %v, %v; want canceled", got, err)
	}
	for _, id := range sw.Jobs {
		if j := pipeWait(t, r.d, id); j.State != gantry.StateCanceled {
			t.Errorf("job %s: %s, want canceled", id, j.State)
		}
	}
	if v := sweepWait(t, r.d, sw.ID); v.Sweep.State != gantry.StateCanceled || v.Sweep.Winner != "" {
		t.Errorf("sweep: %s winner %q, want canceled, none", v.Sweep.State, v.Sweep.Winner)
	}
	if _, err := r.d.CancelSweep(context.Background(), sw.ID); err != nil {
		t.Errorf("CancelSweep again: %v, want harmless", err)
	}
	if n := len(f.pusher.pushCalls()); n != 0 {
		t.Errorf("pushes: got %d, want 0", n)
	}
}

// TestSweepRestart: a gantryd that stopped with every point ended, but the
// sweep not settled (or its winner chosen but not pushed), settles it when
// it starts again; the winner recorded is the one pushed, once.
func TestSweepRestart(t *testing.T) {
	for _, chosen := range []bool{false, true} {
		t.Run(fmt.Sprintf("chosen=%v", chosen), func(t *testing.T) {
			f := pipeNewFakes(t)
			r := pipeNewRig(t, 2, f)
			sw := sweepSubmit(t, r.d, gantry.SweepSpec{Job: gantry.Spec{Push: []string{sweepRef}}, Params: sweepGrid})
			for i, id := range sw.Jobs {
				acc := 0.5 + float64(i)/100 // the last point is best
				j, _ := r.st.Get(context.Background(), id)
				pipeRecord(t, r.st, j, func(j *gantry.Job) {
					j.Metrics.Accuracy, j.GatePassed, j.Image = &acc, true, "sha256:shared"
				}, gantry.StateBuilding, gantry.StateRunning, gantry.StateSucceeded)
			}
			want := sw.Jobs[len(sw.Jobs)-1]
			if chosen {
				want = sw.Jobs[0] // chosen before: not chosen again
				if _, err := r.st.UpdateSweep(context.Background(), sw.ID, func(s *gantry.Sweep) error { s.Winner = want; return nil }); err != nil {
					t.Fatal(err)
				}
			}
			stop := pipeResume(t, r.d)
			v := sweepWait(t, r.d, sw.ID)
			stop()
			if v.Sweep.State != gantry.StateSucceeded || v.Sweep.Winner != want {
				t.Errorf("sweep: %s winner %s (%s), want succeeded, %s", v.Sweep.State, v.Sweep.Winner, v.Sweep.Error, want)
			}
			pushes := f.pusher.pushCalls()
			if len(pushes) != 1 || !slices.Contains(pushes[0].refs, "registry.example/iris:job-"+want) {
				t.Errorf("pushes: %v, want one, of %s", pushes, want)
			}
			// Once more: nothing left to do.
			d2 := pipeNewDaemon(t, r.dir, 2, r.st, f)
			pipeResume(t, d2)()
			if n := len(f.pusher.pushCalls()); n != 1 {
				t.Errorf("pushes after a second restart: %d, want 1", n)
			}
		})
	}
}

// TestSweepResumesItsBuild: a gantryd killed before the sweep's build ends
// keeps the sweep's context, and the next builds once.
func TestSweepResumesItsBuild(t *testing.T) {
	f := pipeNewFakes(t)
	sweepTrain(f)
	r := pipeNewRig(t, 2, f)
	sw := sweepSubmit(t, r.d, gantry.SweepSpec{Job: gantry.Spec{}, Params: sweepGrid[:1]})
	j, _ := r.st.Get(context.Background(), sw.Jobs[0])
	pipeRecord(t, r.st, j, nil, gantry.StateBuilding)
	pipeResume(t, r.d)
	v := sweepWait(t, r.d, sw.ID)
	if v.Sweep.State != gantry.StateSucceeded || v.Sweep.Winner == "" {
		t.Errorf("sweep: %s %q winner %q, want succeeded with a winner", v.Sweep.State, v.Sweep.Error, v.Sweep.Winner)
	}
	if reqs, _ := f.builder.built(); len(reqs) != 1 {
		t.Errorf("builds: got %d, want 1", len(reqs))
	}
}

func TestSubmitSweepRefuses(t *testing.T) {
	many := make([]string, 17)
	for i := range many {
		many[i] = strconv.Itoa(i)
	}
	tests := []struct {
		name string
		spec gantry.SweepSpec
		want string
	}{
		{"no params", gantry.SweepSpec{}, "at least one parameter"},
		{"twice", gantry.SweepSpec{Params: []gantry.Param{{Name: "A", Values: []string{"1"}}, {Name: "A", Values: []string{"2"}}}}, "given twice"},
		{"empty value", gantry.SweepSpec{Params: []gantry.Param{{Name: "A", Values: []string{"1", ""}}}}, "non-empty"},
		{"no values", gantry.SweepSpec{Params: []gantry.Param{{Name: "A"}}}, "non-empty"},
		{"bad name", gantry.SweepSpec{Params: []gantry.Param{{Name: "A B", Values: []string{"1"}}}}, "may not be empty or hold"},
		{"also env", gantry.SweepSpec{Job: gantry.Spec{Run: gantry.RunSpec{Env: []string{"A=1"}}}, Params: []gantry.Param{{Name: "A", Values: []string{"1"}}}}, "also given by --env"},
		{"too many", gantry.SweepSpec{Params: []gantry.Param{{Name: "A", Values: many}, {Name: "B", Values: many}}}, "over 256 points"},
		{"bad job spec", gantry.SweepSpec{Job: gantry.Spec{PromoteOn: "x:sideways"}, Params: sweepGrid}, "promote-on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := pipeNewRig(t, 1, pipeNewFakes(t))
			_, err := r.d.SubmitSweep(context.Background(), tt.spec, nil, pipeTar(t, pipeContext()))
			if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(filepath.Join(r.dir, "contexts")); len(entries) != 0 {
				t.Errorf("contexts left: %v", entries)
			}
		})
	}
	t.Run("queue", func(t *testing.T) {
		r := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.Policy.MaxQueue = 5 })
		_, err := r.d.SubmitSweep(context.Background(), gantry.SweepSpec{Params: sweepGrid}, nil, pipeTar(t, pipeContext()))
		if !errors.Is(err, gantry.ErrTooMany) {
			t.Fatalf("6 points in a queue of 5: got %v, want ErrTooMany", err)
		}
		if sweeps, _ := r.d.ListSweeps(context.Background(), 0); len(sweeps) != 0 {
			t.Errorf("sweeps kept: %d", len(sweeps))
		}
	})
}
