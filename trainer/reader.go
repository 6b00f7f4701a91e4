package trainer

// The Reader: every metric a training program reports, read from its output
// one line at a time, in bounded memory whatever the output's length.

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gantry-ml/gantry"
)

// Reader reads what a training program reports, one line of its output at a
// time, as the output arrives:
//
//   - its accuracy, with the accuracy pattern: the last line that matches
//     decides, even when its value is not a valid accuracy;
//   - the named metrics of the job's patterns (gantry.MetricPattern): each
//     match is a point of the metric's series, the last one its final
//     value; a match whose value is not a finite number is a problem, and
//     leaves the metric without a final value until a valid one comes;
//   - the structured lines (gantry.MetricLine), each a point of the metric
//     it names; one named "accuracy" reports the accuracy, as a line that
//     the accuracy pattern matches would.
//
// A malformed line is recorded as a problem (the first
// gantry.MaxMetricProblems of them, then a count), never stops the reading.
// At most gantry.MaxMetrics metrics are kept, each series downsampled to
// gantry.MaxSeriesPoints points, so its memory is bounded whatever the
// output. A Reader is safe for concurrent use, but lines fed from two
// goroutines have no order, so "last" then means last fed. The zero Reader
// reads with DefaultPattern.
type Reader struct {
	p     *Pattern
	named []namedPattern
	// lines counts the lines fed, for the problems to say where.
	lines atomic.Int64

	mu  sync.Mutex
	acc accuracy
	// series holds each metric's points; final each metric's final value,
	// absent when the last report of it was not valid.
	series map[string]*series
	final  map[string]float64
	// problems are the first MaxMetricProblems; dropped counts the rest.
	problems []string
	dropped  int
	// points counts every point reported, kept or not.
	points int64
}

// namedPattern is a job's pattern for one named metric, compiled.
type namedPattern struct {
	name string
	p    *Pattern
}

// accuracy is the last accuracy report.
type accuracy struct {
	matched bool
	value   float64
	// bad says why the last report's value is not an accuracy; empty when
	// it is one.
	bad string
	// line is the last report, or the part of it around the match, quoted
	// for an error message. It is a copy, so a long line is not kept alive
	// by it.
	line string
}

// NewReader returns a Reader that reads the accuracy with p, and the
// structured lines.
func (p *Pattern) NewReader() *Reader { return &Reader{p: p} }

// ReaderFor returns a Reader for a job's spec: its accuracy pattern
// (MetricRegex, or DefaultPattern), its named metrics' patterns (Metrics)
// and the structured lines. It returns ErrInvalid for a pattern that
// CheckSpec refuses.
func ReaderFor(s *gantry.Spec) (*Reader, error) {
	p, err := Compile(s.MetricRegex)
	if err != nil {
		return nil, err
	}
	r := p.NewReader()
	for _, m := range s.Metrics {
		np, err := compileNamed(m)
		if err != nil {
			return nil, err
		}
		r.named = append(r.named, namedPattern{name: m.Name, p: np})
	}
	return r, nil
}

// Line examines one line of output, without its newline. A trailing '\r' is
// ignored; a line longer than MaxLine is ignored whole (but counted); a '\r'
// inside the line is taken as a terminal would, as the start of a new line
// drawn over the old one (progress bars do this), so each part counts as a
// line of its own. Colour and other terminal escape sequences ("\x1b[32m")
// are removed before the patterns see the line.
func (r *Reader) Line(line string) {
	n := r.lines.Add(1)
	if len(line) > MaxLine {
		return
	}
	line = strings.TrimRight(line, "\r")
	for {
		part, rest, more := strings.Cut(line, "\r")
		r.part(n, part)
		if !more {
			return
		}
		line = rest
	}
}

// part examines one '\r'-free part of line n.
func (r *Reader) part(n int64, line string) {
	if strings.HasPrefix(line, gantry.MetricLine) {
		r.structured(n, line)
		return
	}
	if strings.IndexByte(line, '\x1b') >= 0 {
		line = csi.ReplaceAllString(line, "")
	}
	r.accuracyPart(n, line)
	for i := range r.named {
		r.namedPart(n, &r.named[i], line)
	}
}

// accuracyPart reads line with the accuracy pattern.
func (r *Reader) accuracyPart(n int64, line string) {
	p := r.p
	if p == nil {
		p = defaultPattern
	}
	if p.word != "" && !containsFoldASCII(line, p.word) {
		return
	}
	m := p.re.FindStringSubmatchIndex(line)
	if m == nil {
		return
	}
	value, bad := parse(line, m[2*p.group], m[2*p.group+1])
	quoted := excerpt(line, m[0])

	r.mu.Lock()
	defer r.mu.Unlock()
	r.reportAccuracy(n, -1, value, bad, quoted)
}

// namedPart reads line with one named metric's pattern.
func (r *Reader) namedPart(n int64, np *namedPattern, line string) {
	m := np.p.re.FindStringSubmatchIndex(line)
	if m == nil {
		return
	}
	var value float64
	bad := "the pattern's capture group matched nothing"
	if m[2] >= 0 {
		value, bad = readNumber(strings.TrimSpace(line[m[2]:m[3]]))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if bad != "" {
		r.problem(n, "metric %s: %s", np.name, bad)
		delete(r.final, np.name)
		return
	}
	r.add(n, np.name, -1, value)
}

// structured reads a line that starts with MetricLine.
func (r *Reader) structured(n int64, line string) {
	name, value, step, why := parseMetricLine(line[len(gantry.MetricLine):])
	if why != "" {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.problem(n, "%s", why)
		return
	}
	bad := ""
	if name == "accuracy" && (value < 0 || value > 1) {
		bad = fmt.Sprintf("%s is outside [0,1]", short(fmt.Sprint(value)))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "accuracy" {
		r.reportAccuracy(n, step, value, bad, excerpt(line, 0))
		return
	}
	r.add(n, name, step, value)
}

// reportAccuracy records an accuracy report of line n; r.mu is held.
func (r *Reader) reportAccuracy(n, step int64, value float64, bad, quoted string) {
	r.acc = accuracy{matched: true, value: value, bad: bad, line: quoted}
	if bad != "" {
		delete(r.final, "accuracy")
		return
	}
	r.add(n, "accuracy", step, value)
}

// add records a point of metric name, reported by line n, at step (-1: the
// number of the metric's points before it); r.mu is held.
func (r *Reader) add(n int64, name string, step int64, value float64) {
	s := r.series[name]
	if s == nil {
		if len(r.series) >= gantry.MaxMetrics {
			r.problem(n, "metric %s: a job keeps %d metrics at most; this one is not kept", name, gantry.MaxMetrics)
			return
		}
		if r.series == nil {
			r.series, r.final = map[string]*series{}, map[string]float64{}
		}
		s = newSeries()
		r.series[name] = s
	}
	if step < 0 {
		step = s.n
	}
	s.add(gantry.Point{Step: step, Value: value})
	r.final[name] = value
	r.points++
}

// problem records a problem of line n; r.mu is held.
func (r *Reader) problem(n int64, format string, args ...any) {
	if len(r.problems) >= gantry.MaxMetricProblems {
		r.dropped++
		return
	}
	r.problems = append(r.problems, fmt.Sprintf("line %d: ", n)+fmt.Sprintf(format, args...))
}

// Accuracy returns the value of the last accuracy report, normalised to
// [0,1]. It returns an error when there was none, or when the last one
// holds no finite number in range: an earlier valid line does not count
// then, so an odd or forged last line cannot let an older value through.
// The errors are for a person to read and are of no kind.
func (r *Reader) Accuracy() (float64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.acc.matched {
		return 0, fmt.Errorf("no line of the training output reported accuracy")
	}
	if r.acc.bad != "" {
		return 0, fmt.Errorf("last accuracy line %s: %s", r.acc.line, r.acc.bad)
	}
	return r.acc.value, nil
}

// Metrics returns what the output reported so far, for the job's record:
// the accuracy (or why there is none), every metric's final value, and the
// problems, the last of them "and N more" when there were more than
// gantry.MaxMetricProblems.
func (r *Reader) Metrics() gantry.Metrics {
	var m gantry.Metrics
	if acc, err := r.Accuracy(); err == nil {
		m.Accuracy = &acc
	} else {
		m.AccuracyError = err.Error()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.final) > 0 {
		m.Values = maps.Clone(r.final)
	}
	m.Problems = slices.Clone(r.problems)
	if r.dropped > 0 {
		m.Problems = append(m.Problems, fmt.Sprintf("and %d more", r.dropped))
	}
	return m
}

// Series returns a copy of every metric's series, each of at most
// gantry.MaxSeriesPoints points, its last point the metric's last report.
func (r *Reader) Series() gantry.Series {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(gantry.Series, len(r.series))
	for name, s := range r.series {
		out[name] = s.points()
	}
	return out
}

// Points returns how many points were reported so far, in all: a copy of
// Series taken before is out of date once it has grown.
func (r *Reader) Points() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.points
}
