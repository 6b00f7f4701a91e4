package gantry

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func fp(v float64) *float64 { return &v }

func TestJudge(t *testing.T) {
	loss, acc := Condition{Metric: "loss", Op: "<=", Value: 0.2}, Condition{Metric: "accuracy", Op: ">=", Value: 0.9}
	f1 := Condition{Metric: "f1", Op: ">", Value: 0.5}
	m := Metrics{Accuracy: fp(0.95), Values: map[string]float64{"accuracy": 0.95, "loss": 0.31, "f1": 0.5}}
	tests := []struct {
		name       string
		spec       Spec
		m          Metrics
		pass       bool
		conditions []Condition
		// reason holds these, in order; with none, the reason is empty.
		reason []string
	}{
		{name: "no gate", m: Metrics{}, pass: true},
		{name: "all hold", spec: Spec{Gates: []Condition{acc, {Metric: "loss", Op: "<", Value: 0.5}}}, m: m, pass: true,
			conditions: []Condition{acc, {Metric: "loss", Op: "<", Value: 0.5}}},
		{name: "one of two fails", spec: Spec{Gates: []Condition{acc, loss}}, m: m,
			conditions: []Condition{acc, loss}, reason: []string{"loss 0.3100 is above the gate loss<=0.2"}},
		{name: "every failure named", spec: Spec{Gates: []Condition{loss, f1}}, m: m,
			conditions: []Condition{loss, f1},
			reason:     []string{"loss 0.3100 is above the gate loss<=0.2", "; ", "f1 0.5000 is not above the gate f1>0.5"}},
		{name: "a metric never reported", spec: Spec{Gates: []Condition{{Metric: "val_loss", Op: "<", Value: 1}}}, m: m,
			conditions: []Condition{{Metric: "val_loss", Op: "<", Value: 1}},
			reason:     []string{"the gate needs val_loss<1, but the job reported no val_loss"}},
		{name: "min accuracy is a gate", spec: Spec{MinAccuracy: fp(0.99), Gates: []Condition{loss}}, m: m,
			conditions: []Condition{{Metric: "accuracy", Op: ">=", Value: 0.99}, loss},
			reason:     []string{"accuracy 0.9500 is below the gate accuracy>=0.99", "; ", "loss 0.3100 is above"}},
		{name: "min accuracy, no accuracy reported", spec: Spec{MinAccuracy: fp(0.5)},
			m:          Metrics{AccuracyError: "no line of the training output reported accuracy"},
			conditions: []Condition{{Metric: "accuracy", Op: ">=", Value: 0.5}},
			reason:     []string{"the gate needs accuracy>=0.5, but no line of the training output reported accuracy"}},
		{name: "an old record: accuracy only", spec: Spec{MinAccuracy: fp(0.9)}, m: Metrics{Accuracy: fp(0.93)}, pass: true,
			conditions: []Condition{{Metric: "accuracy", Op: ">=", Value: 0.9}}},
		{name: "an old record fails a gate on another metric", spec: Spec{Gates: []Condition{acc, loss}}, m: Metrics{Accuracy: fp(0.93)},
			conditions: []Condition{acc, loss}, reason: []string{"the gate needs loss<=0.2, but the job reported no loss"}},
		{name: "a gate on the minimum, met exactly", spec: Spec{Gates: []Condition{{Metric: "rmse", Op: "<", Value: 3}}},
			m:          Metrics{Values: map[string]float64{"rmse": 3}},
			conditions: []Condition{{Metric: "rmse", Op: "<", Value: 3}}, reason: []string{"rmse 3.0000 is not below the gate rmse<3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := Judge(&tc.spec, tc.m)
			if g.Passed != tc.pass {
				t.Errorf("passed %v (%q), want %v", g.Passed, g.Reason, tc.pass)
			}
			if !slices.Equal(g.Conditions, tc.conditions) {
				t.Errorf("conditions %v, want %v", g.Conditions, tc.conditions)
			}
			if g.MinAccuracy != tc.spec.MinAccuracy {
				t.Errorf("min accuracy %v, want the spec's %v", g.MinAccuracy, tc.spec.MinAccuracy)
			}
			if (g.Reason == "") != (len(tc.reason) == 0) {
				t.Errorf("reason %q, want one holding %q", g.Reason, tc.reason)
			}
			rest := g.Reason
			for _, w := range tc.reason {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("reason %q: want %q (in the order %q)", g.Reason, w, tc.reason)
					break
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestDecide(t *testing.T) {
	loss := Objective{Metric: "loss"}
	tests := []struct {
		name       string
		o          Objective
		cand       float64
		champ      *float64
		minImprove float64
		promoted   bool
		reason     string
	}{
		{"no champion", loss, 0.3, nil, 0, true, "promoted: the tag held no image with a provenance record"},
		{"max, better", DefaultObjective, 0.95, fp(0.9), 0, true, "promoted: accuracy 0.9500 > 0.9000"},
		{"max, worse", DefaultObjective, 0.8, fp(0.9), 0, false, "kept champion: accuracy 0.8000 <= 0.9000"},
		{"max, equal", DefaultObjective, 0.9, fp(0.9), 0, false, "kept champion: accuracy 0.9000 <= 0.9000"},
		{"max, better by the minimum exactly", DefaultObjective, 0.95, fp(0.9), 0.05, true, "promoted: accuracy 0.9500 > 0.9000"},
		{"max, better by less than the minimum", DefaultObjective, 0.93, fp(0.9), 0.05, false, "kept champion: accuracy 0.9300 beats 0.9000 by less than 0.05"},
		{"min, lower", loss, 0.21, fp(0.25), 0, true, "promoted: loss 0.2100 < 0.2500"},
		{"min, higher", loss, 0.3, fp(0.25), 0, false, "kept champion: loss 0.3000 >= 0.2500"},
		{"min, equal", loss, 0.25, fp(0.25), 0, false, "kept champion: loss 0.2500 >= 0.2500"},
		{"min, lower by the minimum", loss, 0.2, fp(0.25), 0.05, true, "promoted: loss 0.2000 < 0.2500"},
		{"min, lower by less than the minimum", loss, 0.24, fp(0.25), 0.05, false, "kept champion: loss 0.2400 beats 0.2500 by less than 0.05"},
		{"min, unbounded values", Objective{Metric: "rmse"}, 1200, fp(1500), 250, true, "promoted: rmse 1200.0000 < 1500.0000"},
		{"min, tiny values", loss, 0.00012, fp(0.00031), 0, true, "promoted: loss 0.00012 < 0.00031"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide("r/iris:champion", tc.o, tc.cand, tc.champ, tc.minImprove)
			if p.Tag != "r/iris:champion" || p.Promoted != tc.promoted || p.Reason != tc.reason {
				t.Errorf("Decide = %+v; want promoted %v, %q", p, tc.promoted, tc.reason)
			}
		})
	}
}

func TestObjectiveBetter(t *testing.T) {
	loss := Objective{Metric: "loss"}
	for _, tc := range []struct {
		o    Objective
		a, b float64
		want bool
	}{
		{loss, 0.2, 0.3, true}, {loss, 0.3, 0.2, false}, {loss, 0.2, 0.2, false},
		{DefaultObjective, 0.9, 0.8, true}, {DefaultObjective, 0.8, 0.9, false}, {DefaultObjective, 0.9, 0.9, false},
		{DefaultObjective, math.NaN(), 0.1, false}, {loss, math.NaN(), 0.1, false},
	} {
		if got := tc.o.Better(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: Better(%v, %v) = %v, want %v", tc.o, tc.a, tc.b, got, tc.want)
		}
	}
}

// The champion's record is read for the objective's metric: a record from
// before named metrics has accuracy only.
func TestObjectiveOnAChampionRecord(t *testing.T) {
	old := Provenance{Metrics: Metrics{Accuracy: fp(0.9)}}
	if v, ok := old.Metrics.Value(DefaultObjective.Metric); !ok || v != 0.9 {
		t.Errorf("an old record's accuracy: %v, %v; want 0.9", v, ok)
	}
	if _, ok := old.Metrics.Value("loss"); ok {
		t.Errorf("an old record has a loss; want none (the candidate then wins)")
	}
}

func TestMinImprovementValidate(t *testing.T) {
	for _, ok := range []float64{0, 0.01, 1, 250} {
		if err := (&Spec{MinImprovement: ok}).Validate(); err != nil {
			t.Errorf("min improvement %v: %v, want none (losses are not bounded by 1)", ok, err)
		}
	}
	for _, bad := range []float64{-0.1, math.NaN(), math.Inf(1)} {
		if err := (&Spec{MinImprovement: bad}).Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("min improvement %v: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestProvenanceRecordsTheConditions(t *testing.T) {
	j := NewJob(Spec{MinAccuracy: fp(0.9), Gates: []Condition{{Metric: "loss", Op: "<=", Value: 0.2}}}, t0)
	p := NewProvenance(j)
	want := []Condition{{Metric: "accuracy", Op: ">=", Value: 0.9}, {Metric: "loss", Op: "<=", Value: 0.2}}
	if !slices.Equal(p.Gate.Conditions, want) || p.Gate.MinAccuracy == nil {
		t.Errorf("provenance gate %+v, want conditions %v and the min accuracy", p.Gate, want)
	}
}
