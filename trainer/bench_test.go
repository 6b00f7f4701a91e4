package trainer

import (
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// threadCPU returns the CPU time the calling OS thread has used, so that a
// benchmark's figure does not depend on what else the machine runs.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		b.Skipf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// worstCases are accepted patterns at the cost bound, and the default
// pattern, each with the line that keeps the most of its threads alive.
func worstCases() []struct{ pattern, unit string } {
	cases := []struct{ pattern, unit string }{
		{DefaultPattern, "accuracy_"},
		{DefaultPattern, "accuracy: "},
		{DefaultPattern, "Accuracy:1e"},
		{`val_acc=([0-9.]+)`, "val_acc="},
		{`accuracy[:=]\s*([0-9.]+)`, "accuracy:"},
		{`(?i)accuracy[:=]\s*(\S+)`, "accuracy:"},
	}
	// The largest repeat of each family that Compile accepts.
	for _, family := range []string{`[a-y]{%d}z`, `\w{%d}z`, `.{%d}z`, `(?i:a{%d}z)`, `[\p{L}\p{N}\p{S}\p{P}\p{Z}]{%d}z`, `(?:a|b|c|d){%d}z`} {
		last := ""
		for n := 1; n <= maxRepeat; n++ {
			p := fmt.Sprintf(family, n)
			if _, err := Compile(p); err != nil {
				break
			}
			last = p
		}
		if last != "" {
			cases = append(cases, struct{ pattern, unit string }{last, "a"})
		}
	}
	return cases
}

// BenchmarkReaderWorstCase runs the costliest accepted patterns over lines of
// MaxLine bytes made to keep the most threads alive, and reports MB/s of
// wall time and MB/cpu-s of the benchmark thread's CPU time.
func BenchmarkReaderWorstCase(b *testing.B) {
	for _, c := range worstCases() {
		p, err := Compile(c.pattern)
		if err != nil {
			b.Fatalf("Compile(%q): %v", c.pattern, err)
		}
		line := strings.Repeat(c.unit, MaxLine/len(c.unit)+1)[:MaxLine]
		b.Run(fmt.Sprintf("%s/%q", c.pattern, c.unit), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(int64(len(line)))
			cpu := threadCPU(b)
			n := 0
			for b.Loop() {
				p.NewReader().Line(line)
				n++
			}
			if d := threadCPU(b) - cpu; d > 0 {
				b.ReportMetric(float64(n*len(line))/1e6/d.Seconds(), "MB/cpu-s")
			}
		})
	}
}

// BenchmarkReaderLines reads typical lines: a structured metric line, a
// line that the patterns match, and one that reports nothing, with the
// default pattern and one named pattern.
func BenchmarkReaderLines(b *testing.B) {
	r, err := ReaderFor(&gantry.Spec{Metrics: []gantry.MetricPattern{{Name: "loss", Regex: `loss: ([0-9.]+)`}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range []string{
		gantry.MetricLine + `{"name":"val_loss","value":0.3125,"step":12}`,
		"Epoch 12/100 - loss: 0.2931 - accuracy: 0.9123",
		"Epoch 12/100 - 1s - 14ms/step - lr 0.001",
	} {
		b.Run(line[:16], func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				r.Line(line)
			}
		})
	}
}
