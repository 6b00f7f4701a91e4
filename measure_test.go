package gantry

import (
	"errors"
	"testing"
)

func TestParseCondition(t *testing.T) {
	for in, want := range map[string]Condition{
		"loss<=0.2":       {Metric: "loss", Op: "<=", Value: 0.2},
		"accuracy >= 0.9": {Metric: "accuracy", Op: ">=", Value: 0.9},
		"val/f1>0.5":      {Metric: "val/f1", Op: ">", Value: 0.5},
		"rmse<3":          {Metric: "rmse", Op: "<", Value: 3},
	} {
		got, err := ParseCondition(in)
		if err != nil || got != want {
			t.Errorf("ParseCondition(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "loss", "loss=0.2", "loss<=x", "loss<=NaN", "loss<=Inf", "1loss<2", "<=2"} {
		if _, err := ParseCondition(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCondition(%q): %v, want ErrInvalid", in, err)
		}
	}
	c := Condition{Metric: "loss", Op: "<", Value: 0.5}
	if !c.Holds(0.4) || c.Holds(0.5) || c.String() != "loss<0.5" {
		t.Errorf("%v: Holds(0.4) %v, Holds(0.5) %v", c, c.Holds(0.4), c.Holds(0.5))
	}
}

func TestParseObjective(t *testing.T) {
	for in, want := range map[string]Objective{
		"": DefaultObjective, "loss:min": {Metric: "loss"}, "f1": {Metric: "f1", Max: true}, "f1:max": {Metric: "f1", Max: true},
	} {
		if got, err := ParseObjective(in); err != nil || got != want {
			t.Errorf("ParseObjective(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"loss:down", ":min", "a b"} {
		if _, err := ParseObjective(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseObjective(%q): %v, want ErrInvalid", in, err)
		}
	}
	if g := (Objective{Metric: "loss"}).Gain(0.2, 0.3); g < 0.099 || g > 0.101 {
		t.Errorf("loss:min gain of 0.2 over 0.3 = %v, want 0.1", g)
	}
	if g := DefaultObjective.Gain(0.9, 0.95); g > -0.049 {
		t.Errorf("accuracy:max gain of 0.9 over 0.95 = %v, want -0.05", g)
	}
}

func TestSpecMeasureValidate(t *testing.T) {
	s := Spec{PromoteOn: "loss", Gates: []Condition{{Metric: "loss", Op: "<=", Value: 1}}, Metrics: []MetricPattern{{Name: "loss", Regex: `loss=(\S+)`}}}
	if err := s.Validate(); err != nil || s.PromoteOn != "loss:max" {
		t.Fatalf("Validate: %v, promote_on %q", err, s.PromoteOn)
	}
	for name, bad := range map[string]Spec{
		"twice":     {Metrics: []MetricPattern{{Name: "a"}, {Name: "a"}}},
		"bad name":  {Metrics: []MetricPattern{{Name: "a b"}}},
		"bad op":    {Gates: []Condition{{Metric: "a", Op: "=", Value: 1}}},
		"objective": {PromoteOn: "a:sideways"},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate %v, want ErrInvalid", name, err)
		}
	}
	m := Metrics{Values: map[string]float64{"loss": 0.3}}
	if v, ok := m.Value("loss"); !ok || v != 0.3 {
		t.Errorf("Value(loss) = %v, %v", v, ok)
	}
	a := 0.9
	if v, ok := (Metrics{Accuracy: &a}).Value("accuracy"); !ok || v != 0.9 {
		t.Errorf("Value(accuracy) of an old record = %v, %v", v, ok)
	}
}
