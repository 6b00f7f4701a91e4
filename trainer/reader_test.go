package trainer

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// readAll feeds lines to a Reader for spec.
func readAll(t *testing.T, spec gantry.Spec, lines ...string) *Reader {
	t.Helper()
	r, err := ReaderFor(&spec)
	if err != nil {
		t.Fatalf("ReaderFor: %v", err)
	}
	for _, l := range lines {
		r.Line(l)
	}
	return r
}

func metricLine(json string) string { return gantry.MetricLine + json }

func TestNamedPatterns(t *testing.T) {
	spec := gantry.Spec{Metrics: []gantry.MetricPattern{
		{Name: "loss", Regex: `loss: (\S+)`},
		{Name: "f1", Regex: `f1=([0-9.]+)`},
	}}
	r := readAll(t, spec,
		"epoch 1 - loss: 0.9 - accuracy: 0.5",
		"epoch 2 - loss: 0.4 - accuracy: 0.7 f1=0.66",
		"\x1b[1mepoch 3\x1b[0m - loss: \x1b[32m0.25\x1b[0m",
		"\rbatch 1 loss: 0.2\rbatch 2 loss: 0.1",
		"nothing here",
	)
	want := gantry.Series{
		"loss":     {{Step: 0, Value: 0.9}, {Step: 1, Value: 0.4}, {Step: 2, Value: 0.25}, {Step: 3, Value: 0.2}, {Step: 4, Value: 0.1}},
		"accuracy": {{Step: 0, Value: 0.5}, {Step: 1, Value: 0.7}},
		"f1":       {{Step: 0, Value: 0.66}},
	}
	if got := r.Series(); !reflect.DeepEqual(got, want) {
		t.Errorf("Series() = %v; want %v", got, want)
	}
	m := r.Metrics()
	wantValues := map[string]float64{"loss": 0.1, "accuracy": 0.7, "f1": 0.66}
	if !reflect.DeepEqual(m.Values, wantValues) || m.Accuracy == nil || *m.Accuracy != 0.7 || len(m.Problems) != 0 {
		t.Errorf("Metrics() = %+v; want values %v, accuracy 0.7, no problems", m, wantValues)
	}
}

// TestNamedPatternBadLast: a match whose value is no finite number is a
// problem, and leaves the metric without a final value (a diverged loss
// must not pass a gate on an older one), until a valid match comes.
func TestNamedPatternBadLast(t *testing.T) {
	spec := gantry.Spec{Metrics: []gantry.MetricPattern{{Name: "loss", Regex: `loss: (\S+)`}, {Name: "opt", Regex: `opt(?:=(\d+))?;`}}}
	r := readAll(t, spec, "loss: 0.3", "loss: nan", "opt;")
	m := r.Metrics()
	if _, ok := m.Values["loss"]; ok {
		t.Errorf("Values = %v; want no loss after its last line read nan", m.Values)
	}
	want := []string{"line 2: metric loss: nan is not a finite number", "line 3: metric opt: the pattern's capture group matched nothing"}
	if !reflect.DeepEqual(m.Problems, want) {
		t.Errorf("Problems = %q; want %q", m.Problems, want)
	}
	if got := r.Series()["loss"]; len(got) != 1 || got[0].Value != 0.3 {
		t.Errorf("loss series %v; want the one valid point", got)
	}
	r.Line("loss: 1e-2")
	if v := r.Metrics().Values["loss"]; v != 0.01 {
		t.Errorf("after a valid line, loss = %v; want 0.01", v)
	}
}

func TestStructuredLine(t *testing.T) {
	r := readAll(t, gantry.Spec{},
		metricLine(`{"name":"loss","value":0.5}`),
		metricLine(`{"name": "loss", "value": 0.25, "step": 10}`),
		metricLine(`{"name":"loss","value":-1e-3}`),
		metricLine(`{"name":"val/rmse","value":3,"step":null}`),
		metricLine(`{"name":"accuracy","value":0.75,"step":7}`),
		"  "+metricLine(`{"name":"ignored","value":1}`), // not at the start: not one
		"\r"+metricLine(`{"name":"bar","value":1}`)+"\r"+metricLine(`{"name":"bar","value":2}`),
	)
	want := gantry.Series{
		"loss":     {{Step: 0, Value: 0.5}, {Step: 10, Value: 0.25}, {Step: 2, Value: -0.001}},
		"val/rmse": {{Step: 0, Value: 3}},
		"accuracy": {{Step: 7, Value: 0.75}},
		"bar":      {{Step: 0, Value: 1}, {Step: 1, Value: 2}},
	}
	if got := r.Series(); !reflect.DeepEqual(got, want) {
		t.Errorf("Series() = %v; want %v", got, want)
	}
	m := r.Metrics()
	if m.Accuracy == nil || *m.Accuracy != 0.75 || m.Values["accuracy"] != 0.75 || m.Values["loss"] != -0.001 || len(m.Problems) != 0 {
		t.Errorf("Metrics() = %+v; want accuracy 0.75 (also in values), loss -0.001, no problems", m)
	}
	// A structured accuracy out of [0,1] is a bad last accuracy report.
	r.Line(metricLine(`{"name":"accuracy","value":96.5}`))
	if _, err := r.Accuracy(); err == nil || !strings.Contains(err.Error(), "96.5 is outside [0,1]") {
		t.Errorf("after accuracy 96.5: Accuracy() error %v; want it outside [0,1]", err)
	}
	if _, ok := r.Metrics().Values["accuracy"]; ok {
		t.Errorf("after accuracy 96.5: Values holds accuracy; want none")
	}
}

func TestStructuredLineMalformed(t *testing.T) {
	cases := []struct {
		json    string
		wantMsg string
	}{
		{`{"name":"loss","value":0.5`, "not a JSON object"},
		{`not json`, "not a JSON object"},
		{`[1,2]`, "not a JSON object"},
		{`null`, "want a JSON object"},
		{`{"name":"loss","value":0.5,"epoch":3}`, `unknown key "epoch"`},
		{`{"value":0.5}`, "want the name as a string"},
		{`{"name":7,"value":0.5}`, "want the name as a string"},
		{`{"name":"9lives","value":0.5}`, `metric name "9lives"`},
		{`{"name":"a b","value":0.5}`, `metric name "a b"`},
		{`{"name":"` + strings.Repeat("x", 65) + `","value":0.5}`, "over 64 bytes"},
		{`{"name":"loss"}`, "metric loss: want the value as a number"},
		{`{"name":"loss","value":"0.5"}`, "metric loss: want the value as a number"},
		{`{"name":"loss","value":true}`, `"true" is not a number`},
		{`{"name":"loss","value":NaN}`, "not a finite number (NaN or Infinity)"},
		{`{"name":"loss","value":Infinity}`, "not a finite number (NaN or Infinity)"},
		{`{"name":"loss","value":-Infinity}`, "not a finite number (NaN or Infinity)"},
		{`{"name":"loss","value":1e999}`, "1e999 is not a finite number"},
		{`{"name":"loss","value":0.5,"step":1.5}`, "step 1.5 is not a whole number"},
		{`{"name":"loss","value":0.5,"step":-1}`, "step -1 is not a whole number"},
		{`{"name":"loss","value":0.5,"step":"3"}`, `step "3" is not a whole number`},
	}
	for _, c := range cases {
		t.Run(c.json, func(t *testing.T) {
			r := readAll(t, gantry.Spec{}, "hello", metricLine(c.json), metricLine(`{"name":"ok","value":1}`))
			m := r.Metrics()
			if len(m.Problems) != 1 || !strings.HasPrefix(m.Problems[0], "line 2: ") || !strings.Contains(m.Problems[0], c.wantMsg) {
				t.Fatalf("Problems = %q; want one, of line 2, saying %q", m.Problems, c.wantMsg)
			}
			if len(m.Problems[0]) > 400 {
				t.Errorf("problem is %d bytes long", len(m.Problems[0]))
			}
			// Reading went on, and kept nothing of the bad line.
			if !reflect.DeepEqual(m.Values, map[string]float64{"ok": 1}) {
				t.Errorf("Values = %v; want only ok=1", m.Values)
			}
		})
	}
}

func TestProblemsBounded(t *testing.T) {
	r := readAll(t, gantry.Spec{})
	for i := 0; i < 25; i++ {
		r.Line(metricLine(`{"name":"loss","value":NaN}`))
	}
	p := r.Metrics().Problems
	if len(p) != gantry.MaxMetricProblems+1 || !strings.HasPrefix(p[9], "line 10: ") || p[10] != "and 15 more" {
		t.Errorf("Problems = %q; want the first %d, then \"and 15 more\"", p, gantry.MaxMetricProblems)
	}
}

func TestTooManyMetrics(t *testing.T) {
	r := readAll(t, gantry.Spec{})
	for i := 0; i < gantry.MaxMetrics+2; i++ {
		r.Line(metricLine(fmt.Sprintf(`{"name":"m%d","value":%d}`, i, i)))
	}
	r.Line(metricLine(`{"name":"m0","value":-1}`)) // a known name still counts
	m := r.Metrics()
	if len(m.Values) != gantry.MaxMetrics || len(r.Series()) != gantry.MaxMetrics || m.Values["m0"] != -1 {
		t.Errorf("%d values, %d series, m0=%v; want %d, %d, -1", len(m.Values), len(r.Series()), m.Values["m0"], gantry.MaxMetrics, gantry.MaxMetrics)
	}
	want := []string{
		fmt.Sprintf("line 65: metric m64: a job keeps %d metrics at most; this one is not kept", gantry.MaxMetrics),
		fmt.Sprintf("line 66: metric m65: a job keeps %d metrics at most; this one is not kept", gantry.MaxMetrics),
	}
	if !reflect.DeepEqual(m.Problems, want) {
		t.Errorf("Problems = %q; want %q", m.Problems, want)
	}
}

// TestSeriesDownsample: whatever the number of points, a series keeps at
// most MaxSeriesPoints, starting with the first, ending with the last,
// evenly spaced (every 2^k-th point) in between.
func TestSeriesDownsample(t *testing.T) {
	for _, n := range []int{0, 1, 2, gantry.MaxSeriesPoints - 1, gantry.MaxSeriesPoints, gantry.MaxSeriesPoints + 1, 2 * gantry.MaxSeriesPoints, 5001, 100003} {
		s := newSeries()
		for i := 0; i < n; i++ {
			s.add(gantry.Point{Step: int64(i), Value: float64(i) / 2})
		}
		got := s.points()
		if len(got) > gantry.MaxSeriesPoints {
			t.Errorf("%d points: kept %d; want at most %d", n, len(got), gantry.MaxSeriesPoints)
		}
		if n == 0 {
			if len(got) != 0 {
				t.Errorf("no points: got %v", got)
			}
			continue
		}
		if n <= gantry.MaxSeriesPoints-1 && len(got) != n {
			t.Errorf("%d points: kept %d; want all", n, len(got))
		}
		if n > gantry.MaxSeriesPoints && len(got) < gantry.MaxSeriesPoints/2 {
			t.Errorf("%d points: kept %d; want at least %d", n, len(got), gantry.MaxSeriesPoints/2)
		}
		if got[0].Step != 0 || got[len(got)-1] != (gantry.Point{Step: int64(n - 1), Value: float64(n-1) / 2}) {
			t.Errorf("%d points: first %v, last %v; want steps 0 and %d", n, got[0], got[len(got)-1], n-1)
		}
		stride := int64(1)
		if len(got) > 1 {
			stride = got[1].Step
		}
		if stride&(stride-1) != 0 {
			t.Errorf("%d points: stride %d is not a power of two", n, stride)
		}
		for i := 1; i < len(got)-1; i++ {
			if got[i].Step != int64(i)*stride {
				t.Fatalf("%d points: point %d at step %d; want %d", n, i, got[i].Step, int64(i)*stride)
			}
		}
	}
}

// TestReaderMillionLines: a million metric lines leave a Reader of
// bounded size: each series capped, the finals the last values.
func TestReaderMillionLines(t *testing.T) {
	spec := gantry.Spec{Metrics: []gantry.MetricPattern{{Name: "lr", Regex: `lr=([0-9.e-]+)`}}}
	r := readAll(t, spec)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	const n = 1_000_000
	before := heap()
	for i := 0; i < n; i++ {
		switch i % 4 {
		case 0:
			r.Line(fmt.Sprintf(`%s{"name":"loss","value":%d}`, gantry.MetricLine, i))
		case 1:
			r.Line(fmt.Sprintf(`%s{"name":"val_loss","value":%d,"step":%d}`, gantry.MetricLine, i, i))
		case 2:
			r.Line(fmt.Sprintf("step %d lr=%d accuracy: 0.5", i, i))
		default:
			r.Line(fmt.Sprintf("%s{bad %d", gantry.MetricLine, i))
		}
	}
	grown := int64(heap()) - int64(before)
	// 4 series of at most MaxSeriesPoints 16-byte points, the problems,
	// and the maps: well under a MiB. A Reader that kept every point
	// would hold 16 MB.
	if grown > 2<<20 {
		t.Errorf("the heap grew by %d bytes over %d lines; want under 2 MiB", grown, n)
	}
	s := r.Series()
	for _, name := range []string{"loss", "val_loss", "lr", "accuracy"} {
		pts := s[name]
		if len(pts) > gantry.MaxSeriesPoints || len(pts) < gantry.MaxSeriesPoints/2 {
			t.Errorf("%s: %d points; want between %d and %d", name, len(pts), gantry.MaxSeriesPoints/2, gantry.MaxSeriesPoints)
		}
	}
	m := r.Metrics()
	want := map[string]float64{"loss": n - 4, "val_loss": n - 3, "lr": n - 2, "accuracy": 0.5}
	if !reflect.DeepEqual(m.Values, want) {
		t.Errorf("Values = %v; want %v", m.Values, want)
	}
	if last := s["val_loss"][len(s["val_loss"])-1]; last.Step != n-3 {
		t.Errorf("val_loss's last point %v; want step %d", last, n-3)
	}
	if len(m.Problems) != gantry.MaxMetricProblems+1 || m.Problems[10] != fmt.Sprintf("and %d more", n/4-gantry.MaxMetricProblems) {
		t.Errorf("Problems = %q", m.Problems)
	}
}

// TestReaderLineAllocs: a line that reports nothing costs no allocation,
// whatever the patterns; nor does a point once its series has filled.
func TestReaderLineAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	spec := gantry.Spec{Metrics: []gantry.MetricPattern{{Name: "loss", Regex: `loss: ([0-9.]+)`}}}
	r := readAll(t, spec)
	if a := testing.AllocsPerRun(1000, func() { r.Line("Epoch 3/10 - 12s - something else entirely") }); a != 0 {
		t.Errorf("a line that reports nothing: %v allocations; want 0", a)
	}
	for i := 0; i < 4*gantry.MaxSeriesPoints; i++ {
		r.Line("loss: 0.5")
	}
	if a := testing.AllocsPerRun(1000, func() { r.Line("loss: 0.5") }); a > 2 {
		t.Errorf("a point of a full series: %v allocations; want at most 2", a)
	}
}

func TestCheckSpecMetrics(t *testing.T) {
	cases := []struct {
		m       gantry.MetricPattern
		wantMsg string // "" when accepted
	}{
		{gantry.MetricPattern{Name: "loss", Regex: `loss: ([0-9.]+)`}, ""},
		{gantry.MetricPattern{Name: "val/f1", Regex: `(?i)f1\s*=\s*(\S+)`}, ""},
		{gantry.MetricPattern{Name: "loss", Regex: `loss: [0-9.]+`}, "has no capture group"},
		{gantry.MetricPattern{Name: "loss", Regex: `(loss): ([0-9.]+)`}, "2 capture groups"},
		{gantry.MetricPattern{Name: "loss", Regex: `loss: ([0-9.]+`}, "does not compile"},
		{gantry.MetricPattern{Name: "loss", Regex: ``}, "give the regex"},
		{gantry.MetricPattern{Name: "loss", Regex: `(\d*)`}, "matches the empty string"},
		{gantry.MetricPattern{Name: "loss", Regex: `(?:[\p{L}\p{N}\p{S}\p{P}\p{Z}]{1000}z)(\d)`}, "too costly"},
		{gantry.MetricPattern{Name: "loss", Regex: `[a-y]{7}z(\d)`}, "too costly"},
		{gantry.MetricPattern{Name: "accuracy", Regex: `acc=(\S+)`}, "--metric-regex"},
		{gantry.MetricPattern{Name: "9lives", Regex: `x(\d)`}, "metric name"},
	}
	for _, c := range cases {
		spec := gantry.Spec{Metrics: []gantry.MetricPattern{c.m}}
		err := CheckSpec(&spec)
		if c.wantMsg == "" {
			if err != nil {
				t.Errorf("CheckSpec(%v): %v", c.m, err)
			}
			continue
		}
		if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("CheckSpec(%v) = %v; want ErrInvalid saying %q", c.m, err, c.wantMsg)
		}
		if _, rerr := ReaderFor(&spec); rerr == nil && c.m.Name != "9lives" {
			t.Errorf("ReaderFor(%v): no error; want CheckSpec's", c.m)
		}
	}
}

func FuzzMetricLine(f *testing.F) {
	f.Add(`{"name":"loss","value":0.5,"step":3}`)
	f.Add(`{"name":"accuracy","value":1e-400}`)
	f.Add(`{"name":"loss","value":NaN}`)
	f.Add(`{"name":"a","value":-0,"step":null}`)
	f.Add(`{"name":"a","value":1,"value":2}`)
	f.Add(` { "step" : 1 , "name" : "a" , "value" : -0.5e+3 } `)
	f.Fuzz(func(t *testing.T, payload string) {
		// The fast path reads what the slow path reads, the same way.
		if fast, ok := scanMetricLine(payload); ok {
			slow, why := decodeMetricLine(payload)
			if why != "" || fast.nameIsText && gantry.CheckMetricName(fast.name) == nil && fast != slow {
				t.Errorf("%q: scanned %+v, decoded %+v, %q", payload, fast, slow, why)
			}
		}
		name, v, step, why := parseMetricLine(payload)
		if why != "" {
			return
		}
		if gantry.CheckMetricName(name) != nil || math.IsNaN(v) || math.IsInf(v, 0) || math.Signbit(v) && v == 0 || step < -1 {
			t.Errorf("parseMetricLine(%q) = %q, %v, %d", payload, name, v, step)
		}
	})
}

// TestMetricsHelper runs the helper gantry init writes: what it prints is
// what the Reader reads.
func TestMetricsHelper(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gantry_metrics.py"), Files("")["gantry_metrics.py"], 0o644); err != nil {
		t.Fatal(err)
	}
	prog := `from gantry_metrics import log_metric
log_metric("loss", 0.5)
log_metric("loss", 1, step=7)
log_metric("val/f1", "0.25", step=2.0)
log_metric("accuracy", 0.9667)
log_metric("loss", float("nan"))
`
	cmd := exec.Command(python, "-c", prog)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	r := readAll(t, gantry.Spec{}, strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")...)
	want := gantry.Series{
		"loss":     {{Step: 0, Value: 0.5}, {Step: 7, Value: 1}},
		"val/f1":   {{Step: 2, Value: 0.25}},
		"accuracy": {{Step: 0, Value: 0.9667}},
	}
	if got := r.Series(); !reflect.DeepEqual(got, want) {
		t.Errorf("Series() = %v; want %v\noutput:\n%s", got, want, out)
	}
	m := r.Metrics()
	if m.Accuracy == nil || *m.Accuracy != 0.9667 || len(m.Problems) != 1 || !strings.Contains(m.Problems[0], "line 5: metric line: the value is not a finite number") {
		t.Errorf("Metrics() = %+v; want accuracy 0.9667 and the NaN of line 5 a problem", m)
	}
	if n := strings.Count(string(Files("")["gantry_metrics.py"]), "\n"); n != 5 {
		t.Errorf("gantry_metrics.py has %d lines; want 5", n)
	}
}
