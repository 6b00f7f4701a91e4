package main

import (
	"testing"

	"github.com/gantry-ml/gantry"
)

// The outcome line names the metrics the gates judged, beside accuracy.
func TestOutcomeNamesGatedMetrics(t *testing.T) {
	acc := 0.8
	loss := gantry.Condition{Metric: "loss", Op: "<=", Value: 0.2}
	tests := []struct {
		name string
		j    gantry.Job
		want string
	}{
		{"accuracy only", gantry.Job{ID: "j", State: gantry.StateSucceeded, Metrics: gantry.Metrics{Accuracy: &acc}},
			"job j succeeded: accuracy 0.8000"},
		{"a gate on loss", gantry.Job{ID: "j", State: gantry.StateRejected, Error: "loss 0.3100 is above the gate loss<=0.2",
			Spec:    gantry.Spec{MinAccuracy: &acc, Gates: []gantry.Condition{loss, {Metric: "loss", Op: ">", Value: 0}, {Metric: "f1", Op: ">", Value: 0.5}}},
			Metrics: gantry.Metrics{Accuracy: &acc, Values: map[string]float64{"accuracy": 0.8, "loss": 0.31}}},
			"job j rejected: accuracy 0.8000, loss 0.3100: loss 0.3100 is above the gate loss<=0.2"},
		{"no accuracy", gantry.Job{ID: "j", State: gantry.StateSucceeded, Spec: gantry.Spec{Gates: []gantry.Condition{loss}},
			Metrics: gantry.Metrics{Values: map[string]float64{"loss": 0.1}}},
			"job j succeeded: loss 0.1000"},
	}
	for _, tc := range tests {
		if got := outcome(&tc.j); got != tc.want {
			t.Errorf("%s: outcome %q, want %q", tc.name, got, tc.want)
		}
	}
}

// gantry history shows the metric a job promoted on when it was not
// accuracy.
func TestHistoryResult(t *testing.T) {
	acc, loss := 0.9, 0.21
	for _, tc := range []struct {
		e          gantry.HistoryEntry
		acc, objec string
	}{
		{gantry.HistoryEntry{Accuracy: &acc}, "0.9000", "accuracy=0.9000"},
		{gantry.HistoryEntry{}, "-", "accuracy=-"},
		{gantry.HistoryEntry{Accuracy: &acc, Metric: "loss", Value: &loss}, "0.9000", "loss=0.2100"},
		{gantry.HistoryEntry{Metric: "loss"}, "-", "loss=-"},
	} {
		if a, o := accuracyText(tc.e), objectiveText(tc.e); a != tc.acc || o != tc.objec {
			t.Errorf("%+v: %q, %q; want %q, %q", tc.e, a, o, tc.acc, tc.objec)
		}
	}
}
