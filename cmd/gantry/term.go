// What is written to a terminal: which writer is one, a job's text escaped
// so the terminal never acts on it, and a job's log in its modes.

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/gantry-ml/gantry/internal/joblog"
)

// Terminal attributes for gantryd's own lines. A trainer's output reaches
// the terminal escaped, so it can never be drawn with them.
const (
	dim   = "\x1b[2m"
	reset = "\x1b[0m"
)

// appendEscaped appends s to dst with everything a terminal would act on
// made visible: C0 controls (ESC, BEL, CR, backspace, ...) and DEL as
// \xHH, C1 controls (U+0080 to U+009F) as \uHHHH, and bytes that are not
// UTF-8 as \xHH. Tabs pass, and so do newlines when newline is true.
func appendEscaped(dst, s []byte, newline bool) []byte {
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && n == 1:
			dst = fmt.Appendf(dst, `\x%02x`, s[0])
		case r == '\t' || r == '\n' && newline:
			dst = append(dst, s[0])
		case r < 0x20 || r == 0x7f:
			dst = fmt.Appendf(dst, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = append(dst, s[:n]...)
		}
		s = s[n:]
	}
	return dst
}

// escape is s with everything a terminal would act on, newlines included,
// made visible (appendEscaped).
func escape(s string) string { return string(appendEscaped(nil, []byte(s), false)) }

// shown returns how text that comes from a job (its error, its build
// args, its file names) is written to w: escaped on a terminal, as it is
// elsewhere or when raw.
func shown(w io.Writer, raw bool) func(string) string {
	if raw || terminal(w) == nil {
		return func(s string) string { return s }
	}
	return escape
}

// logMode is how a job's log is written out.
type logMode int

const (
	logRaw   logMode = iota // the bytes as stored
	logPlain                // gantryd's marks taken out
	logTerm                 // escaped, gantryd's lines drawn dim
)

// logModeFor is the mode for writing a log to w: on a terminal, escaped
// and styled; elsewhere plain; raw when asked.
func logModeFor(w io.Writer, raw bool) logMode {
	switch {
	case raw:
		return logRaw
	case terminal(w) != nil:
		return logTerm
	}
	return logPlain
}

// logWriter writes a job's log, as it streams in, to w in its mode.
// Close writes what a last, unfinished write left.
type logWriter struct {
	w     io.Writer
	mode  logMode
	mid   bool   // within a line
	own   bool   // within a line of gantryd's
	carry []byte // an unfinished UTF-8 sequence at the end of the last write
}

func newLogWriter(w io.Writer, mode logMode) *logWriter { return &logWriter{w: w, mode: mode} }

func (l *logWriter) Write(p []byte) (int, error) {
	if l.mode == logRaw {
		return l.w.Write(p)
	}
	data := append(l.carry, p...)
	l.carry = nil
	var b []byte
	for len(data) > 0 {
		if !l.mid {
			l.mid = true
			if data[0] == joblog.Mark {
				data, l.own = data[1:], true
				if l.mode == logTerm {
					b = append(b, dim...)
				}
				continue
			}
		}
		i := bytes.IndexByte(data, '\n')
		seg := data
		if i >= 0 {
			seg = data[:i]
		} else if l.mode == logTerm {
			k := len(seg) - unfinishedRune(seg)
			l.carry = append([]byte(nil), seg[k:]...)
			seg = seg[:k]
		}
		b = l.appendText(b, seg)
		if i < 0 {
			break
		}
		b = append(l.endLine(b), '\n')
		data = data[i+1:]
	}
	if _, err := l.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (l *logWriter) appendText(b, s []byte) []byte {
	if l.mode == logTerm {
		return appendEscaped(b, s, false)
	}
	return append(b, s...)
}

// endLine ends gantryd's style at the end of one of its lines.
func (l *logWriter) endLine(b []byte) []byte {
	if l.own && l.mode == logTerm {
		b = append(b, reset...)
	}
	l.mid, l.own = false, false
	return b
}

// Close writes out what is left of an unfinished last line.
func (l *logWriter) Close() error {
	if l.mode == logRaw || !l.mid {
		return nil
	}
	b := l.endLine(l.appendText(nil, l.carry))
	l.carry = nil
	_, err := l.w.Write(b)
	return err
}

// unfinishedRune is the length of the start of a UTF-8 sequence that p
// ends with and that more bytes could finish; 0 when there is none.
func unfinishedRune(p []byte) int {
	for n := 1; n < utf8.UTFMax && n <= len(p); n++ {
		c := p[len(p)-n]
		if !utf8.RuneStart(c) {
			continue // a continuation byte: look further back
		}
		if c >= 0xC0 && !utf8.FullRune(p[len(p)-n:]) {
			return n
		}
		return 0
	}
	return 0
}

// terminal returns the first of ws that is a terminal, or nil.
func terminal(ws ...io.Writer) *os.File {
	for _, w := range ws {
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return f
		}
	}
	return nil
}
