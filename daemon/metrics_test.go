package daemon

import (
	"context"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// metricsOutput reports loss for three epochs through the structured line,
// f1 through a named pattern, the accuracy as the reference trainer does,
// and one malformed line.
const metricsOutput = "Loading data\n" +
	gantry.MetricLine + `{"name":"loss","value":0.9,"step":1}` + "\n" +
	gantry.MetricLine + `{"name":"loss","value":0.5,"step":2}` + "\n" +
	gantry.MetricLine + `{"name":"loss","value":NaN,"step":3}` + "\n" +
	gantry.MetricLine + `{"name":"loss","value":0.25,"step":3}` + "\n" +
	"f1=0.8\n" +
	"Model accuracy: 0.9667\n"

// TestMetricsRecordedAndServed: the finals and problems go to the record,
// the series to their own file, which Metrics serves.
func TestMetricsRecordedAndServed(t *testing.T) {
	f := pipeNewFakes(t)
	f.engine.run = pipeReplay(metricsOutput, runner.Exit{})
	rig := pipeNewRig(t, 1, f)
	ctx := context.Background()
	spec := gantry.Spec{Metrics: []gantry.MetricPattern{{Name: "f1", Regex: `f1=([0-9.]+)`}}}
	j := pipeSubmit(t, rig.d, spec)
	if s, err := rig.d.Metrics(ctx, j.ID, ""); err != nil || s == nil || len(s) != 0 {
		t.Errorf("Metrics of a queued job = %v, %v; want an empty Series", s, err)
	}
	pipeRun(t, rig.d)
	j = pipeWait(t, rig.d, j.ID)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s (%s); want succeeded", j.ID, j.State, j.Error)
	}
	wantValues := map[string]float64{"loss": 0.25, "f1": 0.8, "accuracy": 0.9667}
	if !reflect.DeepEqual(j.Metrics.Values, wantValues) || j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 0.9667 {
		t.Errorf("recorded metrics %+v; want values %v and accuracy 0.9667", j.Metrics, wantValues)
	}
	wantProblems := []string{"line 4: metric line: the value is not a finite number (NaN or Infinity)"}
	if !reflect.DeepEqual(j.Metrics.Problems, wantProblems) {
		t.Errorf("recorded problems %q; want %q", j.Metrics.Problems, wantProblems)
	}
	if _, err := os.Stat(rig.d.SeriesPath(j.ID)); err != nil {
		t.Errorf("the series file: %v", err)
	}

	want := gantry.Series{
		"loss":     {{Step: 1, Value: 0.9}, {Step: 2, Value: 0.5}, {Step: 3, Value: 0.25}},
		"f1":       {{Step: 0, Value: 0.8}},
		"accuracy": {{Step: 0, Value: 0.9667}},
	}
	if got, err := rig.d.Metrics(ctx, j.ID, ""); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Metrics(%s) = %v, %v; want %v", j.ID, got, err, want)
	}
	if got, err := rig.d.Metrics(ctx, j.ID, "loss"); err != nil || !reflect.DeepEqual(got, gantry.Series{"loss": want["loss"]}) {
		t.Errorf("Metrics(%s, loss) = %v, %v; want only loss", j.ID, got, err)
	}
	if got, err := rig.d.Metrics(ctx, j.ID, "val_loss"); err != nil || len(got) != 0 {
		t.Errorf("Metrics(%s, val_loss) = %v, %v; want an empty Series", j.ID, got, err)
	}
	if _, err := rig.d.Metrics(ctx, "nosuchjob", ""); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("Metrics of an unknown job: %v; want ErrNotFound", err)
	}
	if _, err := rig.d.Metrics(ctx, j.ID, "9lives"); !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("Metrics with a bad name: %v; want ErrInvalid", err)
	}
}

// TestMetricsLive: while the job trains, its series file follows the
// points reported so far.
func TestMetricsLive(t *testing.T) {
	f := pipeNewFakes(t)
	release := make(chan struct{})
	f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		if _, err := io.WriteString(out, gantry.MetricLine+`{"name":"loss","value":0.5}`+"\n"); err != nil {
			return runner.Exit{}, err
		}
		select {
		case <-release:
		case <-ctx.Done():
			return runner.Exit{}, ctx.Err()
		}
		_, err := io.WriteString(out, gantry.MetricLine+`{"name":"loss","value":0.25}`+"\naccuracy: 1\n")
		return runner.Exit{}, err
	}
	rig := pipeNewRig(t, 1, f)
	ctx := context.Background()
	pipeRun(t, rig.d)
	j := pipeSubmit(t, rig.d, gantry.Spec{})
	pipeEventually(t, "the first point to be served", func() bool {
		s, err := rig.d.Metrics(ctx, j.ID, "loss")
		return err == nil && len(s["loss"]) == 1
	})
	close(release)
	pipeWait(t, rig.d, j.ID)
	want := gantry.Series{"loss": {{Step: 0, Value: 0.5}, {Step: 1, Value: 0.25}}, "accuracy": {{Step: 0, Value: 1}}}
	if got, err := rig.d.Metrics(ctx, j.ID, ""); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Metrics at the end = %v, %v; want %v", got, err, want)
	}
}

// TestMetricsAcrossEngineLoss: when the engine goes away mid-training and
// the container's output is replayed from the start on re-attaching, each
// point counts once.
func TestMetricsAcrossEngineLoss(t *testing.T) {
	f := pipeNewFakes(t)
	var calls atomic.Int32
	f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		if calls.Add(1) == 1 {
			// The first three lines, then the engine is gone.
			head := strings.SplitAfterN(metricsOutput, "\n", 4)
			if _, err := io.WriteString(out, strings.Join(head[:3], "")); err != nil {
				return runner.Exit{}, err
			}
			return runner.Exit{}, gantry.Errorf(gantry.ErrUnavailable, "engine gone")
		}
		return pipeReplay(metricsOutput, runner.Exit{})(ctx, id, out)
	}
	rig := pipeNewRig(t, 1, f)
	pipeRun(t, rig.d)
	j := pipeSubmit(t, rig.d, gantry.Spec{Metrics: []gantry.MetricPattern{{Name: "f1", Regex: `f1=([0-9.]+)`}}})
	j = pipeWait(t, rig.d, j.ID)
	if j.State != gantry.StateSucceeded || calls.Load() != 2 {
		t.Fatalf("job %s: %s (%s) after %d runs; want succeeded after 2", j.ID, j.State, j.Error, calls.Load())
	}
	want := gantry.Series{
		"loss":     {{Step: 1, Value: 0.9}, {Step: 2, Value: 0.5}, {Step: 3, Value: 0.25}},
		"f1":       {{Step: 0, Value: 0.8}},
		"accuracy": {{Step: 0, Value: 0.9667}},
	}
	if got, err := rig.d.Metrics(context.Background(), j.ID, ""); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Metrics = %v, %v; want %v", got, err, want)
	}
	if p := j.Metrics.Problems; len(p) != 1 || !strings.HasPrefix(p[0], "line 4: ") {
		t.Errorf("problems %q; want the one of line 4", p)
	}
}
