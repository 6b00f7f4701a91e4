package daemon

// Traces: where the time of one request or one job step went, for
// gantryd --debug (see BENCHMARKS.md, "Where a submit's time goes").

import (
	"time"
)

// trace marks the moments of one piece of work: attrs gives each mark's
// time since the one before, as log attributes.
type trace struct {
	last  time.Time
	marks []any
}

func newTrace() *trace { return &trace{last: time.Now()} }

// mark ends the part named what.
func (t *trace) mark(what string) {
	now := time.Now()
	t.marks = append(t.marks, what, now.Sub(t.last))
	t.last = now
}

func (t *trace) attrs() []any { return t.marks }
