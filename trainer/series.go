package trainer

import (
	"slices"

	"github.com/gantry-ml/gantry"
)

// series is one metric's points, bounded: it keeps every stride-th point
// reported (the 0th, the stride-th, ...), fewer than
// gantry.MaxSeriesPoints of them, and the last one. Each time the kept
// points fill up, every other one goes and the stride doubles, so a series
// of any length takes the same memory and still spans it from the start.
type series struct {
	kept []gantry.Point
	// stride is a power of two: point i is kept when i%stride == 0.
	stride int64
	// n counts the points reported.
	n    int64
	last gantry.Point
}

func newSeries() *series { return &series{stride: 1} }

func (s *series) add(p gantry.Point) {
	if s.n%s.stride == 0 {
		s.kept = append(s.kept, p)
		if len(s.kept) == gantry.MaxSeriesPoints {
			// kept[j] is point j*stride: those at even j are the
			// multiples of the doubled stride.
			for j := 0; 2*j < len(s.kept); j++ {
				s.kept[j] = s.kept[2*j]
			}
			s.kept = s.kept[:(len(s.kept)+1)/2]
			s.stride *= 2
		}
	}
	s.last = p
	s.n++
}

// points returns a copy of the kept points, and the last one when it was
// not kept: at most gantry.MaxSeriesPoints.
func (s *series) points() []gantry.Point {
	out := slices.Grow(slices.Clone(s.kept), 1)
	if s.n > 0 && (s.n-1)%s.stride != 0 {
		out = append(out, s.last)
	}
	return out
}
