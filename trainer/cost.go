package trainer

import (
	"math/bits"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gantry-ml/gantry"
)

// Go's regexp matches in time linear in the line's length, but the factor is
// the number of threads its NFA (or its backtracker, whose visited set is
// bounded alike) keeps alive at once, each taking a few nanoseconds per byte:
// `[a-y]{8}z` over a line of "a" runs at about 14 MB/s here, and the
// attacker's `(?:[\p{L}\p{N}\p{S}\p{P}\p{Z}]{1000}z)` at 14 KB/s. So Compile
// bounds the work per byte of a pattern's worst line: the cost of the
// largest set of program instructions that can be live at one position of
// any line. BenchmarkReaderWorstCase measures the patterns at the bound.
const (
	// maxRepeat is the largest repetition count (x{n} or x{n,m}) a
	// pattern may use.
	maxRepeat = 16
	// maxInst bounds the compiled program, so that the analysis below is
	// cheap.
	maxInst = 256
	// maxStates bounds the sets of live instructions the analysis visits;
	// a pattern with more is refused as too costly to tell.
	maxStates = 2000
	// maxCost bounds the cost of a set of live instructions (see
	// instCost): the costliest patterns it accepts run at about 14 MB per
	// CPU-second on their worst lines here (BenchmarkReaderWorstCase), over
	// the 10 MB/s every accepted pattern must keep up with.
	maxCost = 20
)

// tooCostly is the error for a pattern whose matching would cost too much.
func tooCostly(why string) error {
	return gantry.Errorf(gantry.ErrInvalid, "metric pattern is too costly to match against every line of output: %s; "+
		"simplify it: start it with literal text (`val_acc=([0-9.]+)`), use short classes instead of \\p{...}, and avoid counted repeats like {100}", why)
}

// checkCost returns an error of kind ErrInvalid when the pattern's matching
// may cost more than the bounds allow. pattern must compile.
func checkCost(pattern string) error {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return gantry.Errorf(gantry.ErrInvalid, "metric pattern does not compile: %v", err)
	}
	if n := largestRepeat(re); n > maxRepeat {
		return tooCostly("it repeats " + strconv.Itoa(n) + " times, at most " + strconv.Itoa(maxRepeat) + " are allowed")
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return gantry.Errorf(gantry.ErrInvalid, "metric pattern does not compile: %v", err)
	}
	if len(prog.Inst) > maxInst {
		return tooCostly("its program has " + strconv.Itoa(len(prog.Inst)) + " instructions, at most " + strconv.Itoa(maxInst) + " are allowed")
	}
	c, ok := liveCost(prog)
	if !ok {
		return tooCostly("it has too many ways to be part-way through a match")
	}
	// DefaultPattern is gantry's own, measured at its worst line (about
	// 13 MB per CPU-second, BenchmarkReaderWorstCase): the bound is for
	// the patterns users write.
	if c > maxCost && pattern != DefaultPattern {
		return tooCostly("up to " + strconv.Itoa(c) + " units of work per byte of output, at most " + strconv.Itoa(maxCost) + " are allowed")
	}
	return nil
}

// largestRepeat returns the largest repetition count in re.
func largestRepeat(re *syntax.Regexp) int {
	n := 0
	if re.Op == syntax.OpRepeat {
		n = max(re.Min, re.Max)
	}
	for _, s := range re.Sub {
		n = max(n, largestRepeat(s))
	}
	return n
}

// instCost is the work a live instruction takes at each byte: one for
// control flow, two for a rune check, four for a letter in any case (Go's
// regexp walks its case folds), and more for a class of many ranges, which
// it searches by bisection.
func instCost(in *syntax.Inst) int {
	switch in.Op {
	case syntax.InstRune:
		if len(in.Rune) == 1 {
			return 4 // a letter with syntax.FoldCase
		}
		return 2 + bits.Len(uint(len(in.Rune)/2))
	case syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
		return 2
	}
	return 1
}

// liveCost returns the largest cost of a set of instructions that can be
// live together while prog searches a line: the sets reachable in the
// subset construction of prog, searched unanchored (a thread starts at
// every position), with every empty-width assertion taken as true. It
// reports false when there are more than maxStates such sets.
func liveCost(prog *syntax.Prog) (int, bool) {
	classes := runeClasses(prog)
	start := closure(prog, nil, []uint32{uint32(prog.Start)})
	seen := map[string]bool{key(start): true}
	queue := [][]uint32{start}
	worst := 0
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		c := 0
		for _, pc := range s {
			c += instCost(&prog.Inst[pc])
		}
		worst = max(worst, c)
		for _, r := range classes {
			var next []uint32
			for _, pc := range s {
				in := &prog.Inst[pc]
				if consumes(in) && in.MatchRune(r) {
					next = append(next, in.Out)
				}
			}
			next = closure(prog, next, []uint32{uint32(prog.Start)})
			if k := key(next); !seen[k] {
				if len(seen) >= maxStates {
					return worst, false
				}
				seen[k] = true
				queue = append(queue, next)
			}
		}
	}
	return worst, true
}

func consumes(in *syntax.Inst) bool {
	switch in.Op {
	case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
		return true
	}
	return false
}

// closure returns the sorted set of instructions reachable from the pcs in
// both lists without consuming a rune, the pcs themselves included.
func closure(prog *syntax.Prog, a, b []uint32) []uint32 {
	on := map[uint32]bool{}
	stack := append(slices.Clone(a), b...)
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if on[pc] {
			continue
		}
		on[pc] = true
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, in.Out, in.Arg)
		case syntax.InstCapture, syntax.InstNop, syntax.InstEmptyWidth:
			stack = append(stack, in.Out)
		}
	}
	out := make([]uint32, 0, len(on))
	for pc := range on {
		out = append(out, pc)
	}
	slices.Sort(out)
	return out
}

func key(s []uint32) string {
	var b strings.Builder
	for _, pc := range s {
		b.WriteString(strconv.FormatUint(uint64(pc), 36))
		b.WriteByte(',')
	}
	return b.String()
}

// runeClasses returns one rune of each class of runes that every
// instruction of prog treats alike.
func runeClasses(prog *syntax.Prog) []rune {
	points := []rune{0, '\n', '\n' + 1, utf8.MaxRune}
	for i := range prog.Inst {
		in := &prog.Inst[i]
		if !consumes(in) {
			continue
		}
		if len(in.Rune) == 1 {
			r := in.Rune[0]
			points = append(points, r, r+1)
			if syntax.Flags(in.Arg)&syntax.FoldCase != 0 {
				for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
					points = append(points, f, f+1)
				}
			}
			continue
		}
		for j := 0; j+1 < len(in.Rune); j += 2 {
			points = append(points, in.Rune[j], in.Rune[j+1]+1)
		}
	}
	slices.Sort(points)
	points = slices.Compact(points)
	var out []rune
	seen := map[string]bool{}
	for _, r := range points {
		if r > unicode.MaxRune {
			continue
		}
		var sig strings.Builder
		for i := range prog.Inst {
			if in := &prog.Inst[i]; consumes(in) && in.MatchRune(r) {
				sig.WriteString(strconv.Itoa(i))
				sig.WriteByte(',')
			}
		}
		if !seen[sig.String()] {
			seen[sig.String()] = true
			out = append(out, r)
		}
	}
	return out
}
