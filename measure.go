package gantry

// Named metrics, the gates on them, the direction a champion is chosen by,
// and sweeps: a grid of jobs built once, of which only the best ships.

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MetricLine starts the structured line a training program prints to report
// a metric: MetricLine + `{"name":"loss","value":0.31,"step":3}` (step is
// optional). Nothing a library prints by itself starts so.
const MetricLine = "@@gantry metric "

// The bounds of a job's metrics.
const (
	// MaxMetrics bounds the distinct metric names a job keeps.
	MaxMetrics = 64
	// MaxSeriesPoints bounds the points kept of one metric's series: beyond
	// it, the series is downsampled (every other point dropped, and only
	// every 2^k-th point kept from then on), its last point always kept.
	MaxSeriesPoints = 1000
	// MaxMetricProblems bounds the problems (malformed lines) recorded.
	MaxMetricProblems = 10
)

// MetricPattern reads a named metric from the training output: the regex's
// one capture group is the value (SageMaker's shape), the last match wins.
type MetricPattern struct {
	Name  string `json:"name"`
	Regex string `json:"regex"`
}

// Point is one value of a metric's series, at a step when the program gave
// one (else the number of values of that metric before it).
type Point struct {
	Step  int64   `json:"step"`
	Value float64 `json:"value"`
}

// Series are a job's metrics, name to points in the order reported.
type Series map[string][]Point

// metricName matches the names a metric may have.
var metricName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-/]{0,63}$`)

// CheckMetricName returns ErrInvalid for a name a metric may not have.
func CheckMetricName(name string) error {
	if !metricName.MatchString(name) {
		return Errorf(ErrInvalid, "metric name %q: want a letter or '_', then letters, digits, '_', '.', '-' or '/' (64 at most)", name)
	}
	return nil
}

// Value returns metric name's final value: Values's, or for accuracy the
// accuracy field (records from before named metrics).
func (m Metrics) Value(name string) (float64, bool) {
	if v, ok := m.Values[name]; ok {
		return v, true
	}
	if name == "accuracy" && m.Accuracy != nil {
		return *m.Accuracy, true
	}
	return 0, false
}

// Condition is one gate: a metric compared with a number.
type Condition struct {
	Metric string  `json:"metric"`
	Op     string  `json:"op"` // >=, >, <=, <
	Value  float64 `json:"value"`
}

// ParseCondition reads a gate as --gate takes it: "loss<=0.2",
// "accuracy >= 0.9". It returns ErrInvalid.
func ParseCondition(s string) (Condition, error) {
	for _, op := range []string{">=", "<=", ">", "<"} {
		name, num, ok := strings.Cut(s, op)
		if !ok {
			continue
		}
		name, num = strings.TrimSpace(name), strings.TrimSpace(num)
		if err := CheckMetricName(name); err != nil {
			return Condition{}, Errorf(ErrInvalid, "gate %q: %v", s, err)
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return Condition{}, Errorf(ErrInvalid, "gate %q: %q is not a finite number", s, num)
		}
		return Condition{Metric: name, Op: op, Value: v}, nil
	}
	return Condition{}, Errorf(ErrInvalid, "gate %q: want NAME>=X, NAME>X, NAME<=X or NAME<X, like loss<=0.2", s)
}

// Holds reports whether value v meets the condition.
func (c Condition) Holds(v float64) bool {
	switch c.Op {
	case ">=":
		return v >= c.Value
	case ">":
		return v > c.Value
	case "<=":
		return v <= c.Value
	case "<":
		return v < c.Value
	}
	return false
}

func (c Condition) String() string { return fmt.Sprintf("%s%s%g", c.Metric, c.Op, c.Value) }

// Objective is the metric a champion is chosen by, and its direction.
type Objective struct {
	Metric string
	// Max is true when higher is better.
	Max bool
}

// DefaultObjective is accuracy, higher is better.
var DefaultObjective = Objective{Metric: "accuracy", Max: true}

// ParseObjective reads --promote-on: "NAME", "NAME:max" or "NAME:min"
// ("" is accuracy:max; a bare name is :max). It returns ErrInvalid.
func ParseObjective(s string) (Objective, error) {
	if s == "" {
		return DefaultObjective, nil
	}
	name, dir, _ := strings.Cut(s, ":")
	if err := CheckMetricName(name); err != nil {
		return Objective{}, Errorf(ErrInvalid, "promote-on %q: %v", s, err)
	}
	switch dir {
	case "", "max":
		return Objective{Metric: name, Max: true}, nil
	case "min":
		return Objective{Metric: name}, nil
	}
	return Objective{}, Errorf(ErrInvalid, "promote-on %q: want NAME, NAME:max or NAME:min", s)
}

func (o Objective) String() string {
	if o.Max {
		return o.Metric + ":max"
	}
	return o.Metric + ":min"
}

// Gain is how much better candidate is than champion in o's direction
// (negative when worse).
func (o Objective) Gain(candidate, champion float64) float64 {
	if o.Max {
		return candidate - champion
	}
	return champion - candidate
}

// Better reports whether value a is strictly better than value b in o's
// direction (a NaN is never better), to rank jobs by the objective.
func (o Objective) Better(a, b float64) bool { return o.Gain(a, b) > 0 }

// Conditions are every condition a job that trained with exit 0 must meet
// to pass: accuracy>=MinAccuracy when that is set (--min-accuracy X is
// --gate accuracy>=X), then its Gates.
func (s *Spec) Conditions() []Condition {
	var cs []Condition
	if s.MinAccuracy != nil {
		cs = append(cs, Condition{Metric: "accuracy", Op: ">=", Value: *s.MinAccuracy})
	}
	return append(cs, s.Gates...)
}

// Param is one parameter of a sweep and the values it takes.
type Param struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// SweepSpec is what a user submits to sweep: one job spec (its Push and
// Promote apply to the winner alone) and the grid of parameters, each
// reaching the trainer as an environment variable of its name.
type SweepSpec struct {
	Job    Spec    `json:"job"`
	Params []Param `json:"params"`
}

// MaxSweepPoints bounds a sweep's grid.
const MaxSweepPoints = 256

// Sweep is the record of a sweep: its points are jobs; the image is built
// once; the winner is chosen once every point ended.
type Sweep struct {
	ID    string    `json:"id"`
	Spec  SweepSpec `json:"spec"`
	State State     `json:"state"`
	Error string    `json:"error,omitempty"`
	// Jobs are the points' job IDs, in grid order.
	Jobs []string `json:"jobs"`
	// Image is the image built once for every point.
	Image string `json:"image,omitempty"`
	// Winner is the job chosen (the best that passed its gates, by the
	// objective), once chosen; "" while points run, or when none passed.
	Winner  string     `json:"winner,omitempty"`
	Created time.Time  `json:"created"`
	Ended   *time.Time `json:"ended,omitempty"`
}

// validateMeasure checks the metric part of a spec (the patterns' regexes
// are the trainer contract's to check) and normalizes PromoteOn.
func (s *Spec) validateMeasure() error {
	if len(s.Metrics) > 16 || len(s.Gates) > 16 {
		return Errorf(ErrInvalid, "%d metric patterns and %d gates: 16 of each at most", len(s.Metrics), len(s.Gates))
	}
	names := map[string]bool{}
	for _, m := range s.Metrics {
		if err := CheckMetricName(m.Name); err != nil {
			return err
		}
		if names[m.Name] {
			return Errorf(ErrInvalid, "metric %s: given twice", m.Name)
		}
		names[m.Name] = true
	}
	for _, g := range s.Gates {
		if err := CheckMetricName(g.Metric); err != nil {
			return err
		}
		if !slices.Contains([]string{">=", ">", "<=", "<"}, g.Op) || math.IsNaN(g.Value) || math.IsInf(g.Value, 0) {
			return Errorf(ErrInvalid, "gate %s: want NAME>=X, NAME>X, NAME<=X or NAME<X with a finite X", g)
		}
	}
	if s.PromoteOn != "" {
		o, err := ParseObjective(s.PromoteOn)
		if err != nil {
			return err
		}
		s.PromoteOn = o.String()
	}
	return nil
}

// SweepPoint is one point of a sweep as its leaderboard shows it.
type SweepPoint struct {
	Job     string            `json:"job"`
	Params  map[string]string `json:"params"`
	State   State             `json:"state"`
	Metrics Metrics           `json:"metrics"`
	// Passed is set when the point trained with exit 0 and passed its gates.
	Passed bool   `json:"passed"`
	Error  string `json:"error,omitempty"`
}

// SweepView is a sweep with its leaderboard: the points ranked best first
// by the objective (those that passed first, then the rest, in grid order).
type SweepView struct {
	Sweep     Sweep        `json:"sweep"`
	Objective string       `json:"objective"`
	Points    []SweepPoint `json:"points"`
}
