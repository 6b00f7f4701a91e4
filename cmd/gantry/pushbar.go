// The push bar: a push's progress lines drawn as one bar with its rate,
// for a job's view and for gantry push.

package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
)

// pushLines shows what gantry push reports: its typed progress as the bar
// on a terminal (plain lines elsewhere), and its lines. The "pushed
// REF@DIGEST" lines are left to the command's output.
type pushLines struct {
	v *view
}

func pushProgress(errOut io.Writer, quiet bool) *pushLines {
	v := &view{progress: errOut, now: time.Now}
	if quiet {
		v.progress = io.Discard
	} else if f := terminal(errOut); f != nil {
		v.tty = true
	}
	return &pushLines{v: v}
}

func (p *pushLines) Linef(format string, args ...any) {
	l := fmt.Sprintf(format, args...)
	switch {
	case strings.HasPrefix(l, "pushed "):
	case p.v.tty: // gantryd's own, not a job log
		p.v.ownLine(l)
	default:
		fmt.Fprintln(p.v.progress, l)
	}
}

func (p *pushLines) Progress(pr gantry.Progress) {
	if p.v.tty {
		p.v.pushed(pr)
		return
	}
	if pr.Digest == "" {
		fmt.Fprintf(p.v.progress, "pushing %s: %s of %s\n", pr.Ref, gantry.HumanBytes(pr.Current), gantry.HumanBytes(pr.Total))
	}
}

// end leaves the bar on its own line.
func (p *pushLines) end() { p.v.endBar() }

// endBar leaves the push bar as it last stood, on its own line.
func (v *view) endBar() {
	if v.bar {
		fmt.Fprintln(v.progress)
		v.bar, v.meter = false, meter{}
	}
}

// pushed draws a push's progress record as the bar.
func (v *view) pushed(p gantry.Progress) {
	r := v.meter.add(v.now(), p.Current)
	fmt.Fprintf(v.progress, "\r%s\x1b[K", pushBar(p.Current, p.Total, r))
	v.bar = true
}

// barWidth is the number of cells of the push bar.
const barWidth = 30

// pushBar is the push's progress line: the bar, the share done, the bytes
// done and in all, and the rate (left out while unknown, at 0).
func pushBar(done, total int64, rate float64) string {
	frac := 0.0
	if total > 0 {
		frac = min(max(float64(done)/float64(total), 0), 1)
	}
	n := int(frac * barWidth)
	bar := strings.Repeat("=", n)
	if n < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-n-1)
	}
	s := fmt.Sprintf("pushing [%s] %3d%%  %s / %s", bar, int(frac*100), gantry.HumanBytes(done), gantry.HumanBytes(total))
	if rate > 0 {
		s += "  " + gantry.HumanBytes(int64(rate)) + "/s"
	}
	return s
}

// sample is how many bytes a push had done at a moment.
type sample struct {
	at   time.Time
	done int64
}

// rateWindow is how far back the rate looks: long enough to smooth the
// once-a-second progress lines, short enough to follow a change of pace.
const rateWindow = 5 * time.Second

// meter computes a push's rate from its successive progress lines.
type meter struct {
	samples []sample
}

// add records that done bytes were done at at, and returns the rate in
// bytes a second over the last rateWindow (0 until it can tell). A count
// that goes back is a new push, which starts afresh.
func (m *meter) add(at time.Time, done int64) float64 {
	if n := len(m.samples); n > 0 && done < m.samples[n-1].done {
		m.samples = m.samples[:0]
	}
	m.samples = append(m.samples, sample{at, done})
	// Keep the newest sample at least rateWindow old, and all after it.
	i := 0
	for i < len(m.samples)-2 && at.Sub(m.samples[i+1].at) >= rateWindow {
		i++
	}
	m.samples = m.samples[i:]
	return rate(m.samples)
}

// rate is the bytes a second between the first and the last of samples,
// or 0 when they do not tell.
func rate(samples []sample) float64 {
	if len(samples) < 2 {
		return 0
	}
	first, last := samples[0], samples[len(samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 || last.done < first.done {
		return 0
	}
	return float64(last.done-first.done) / dt
}
