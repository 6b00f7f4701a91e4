// Package joblog is the format of a job's log, shared by gantryd, which
// writes it, and the gantry CLI, which shows it.
//
// A job log mixes what gantryd says with what the build and the training
// program print. Every line gantryd writes starts with the byte Mark; the
// output of a build or a training program goes through a filter that turns
// each Mark byte it holds into the four characters `\x1e`, so no line of
// theirs can start with it. A reader (the CLI, recovery) believes only marked
// lines to be gantryd's.
package joblog

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Mark starts every line gantryd writes into a job log: the ASCII record
// separator.
const Mark = '\x1e'

// escapedMark is what a Mark byte in a build's or a trainer's output is
// stored as.
const escapedMark = `\x1e`

// Own reports whether line (without its newline) is one gantryd wrote, and
// returns it without its mark.
func Own(line string) (string, bool) {
	return strings.CutPrefix(line, string(Mark))
}

// Line is s as gantryd's own line: the mark, s, a newline.
func Line(s string) string { return string(Mark) + s + "\n" }

// Writer writes a job's log. Its methods keep gantryd's lines and the
// output of the build and the training apart: each starts on a line of its
// own, and only gantryd's carry the mark. A Writer is safe for concurrent
// use; after each write it calls the notify function it was given.
type Writer struct {
	mu     sync.Mutex
	w      io.Writer
	notify func()
	start  bool // the next byte starts a line
	own    bool // the line under way is gantryd's
}

// NewWriter returns a Writer appending to w. atStart says whether w is at
// the start of a line (empty, or ending with a newline); notify, when not
// nil, is called after each write.
func NewWriter(w io.Writer, atStart bool, notify func()) *Writer {
	if notify == nil {
		notify = func() {}
	}
	return &Writer{w: w, start: atStart, notify: notify}
}

// Linef writes one line of gantryd's own (a newline is added).
func (w *Writer) Linef(format string, args ...any) error {
	_, err := w.writeOwn([]byte(fmt.Sprintf(format, args...) + "\n"))
	return err
}

// Own is a writer of gantryd's own text (e.g. push progress): each line
// written to it is marked.
func (w *Writer) Own() io.Writer { return ownWriter{w} }

// Output is a writer of untrusted text (a build's progress, a training
// program's output): each Mark byte in it is stored as `\x1e`.
func (w *Writer) Output() io.Writer { return outputWriter{w} }

type ownWriter struct{ w *Writer }

func (o ownWriter) Write(p []byte) (int, error) { return o.w.writeOwn(p) }

type outputWriter struct{ w *Writer }

func (o outputWriter) Write(p []byte) (int, error) { return o.w.writeOutput(p) }

func (w *Writer) writeOwn(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.ownLocked(p)
	w.mu.Unlock()
	w.notify()
	return n, err
}

func (w *Writer) ownLocked(p []byte) (int, error) {
	var b []byte
	for rest := p; len(rest) > 0; {
		switch {
		case w.start:
			b = append(b, Mark)
		case !w.own: // a line of the output is under way: end it
			b = append(b, '\n', Mark)
		}
		w.start, w.own = false, true
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
			w.start, w.own = true, false
		}
		b = append(b, line...)
		rest = rest[len(line):]
	}
	if _, err := w.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *Writer) writeOutput(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	n, err := w.outputLocked(p)
	w.mu.Unlock()
	w.notify()
	return n, err
}

func (w *Writer) outputLocked(p []byte) (int, error) {
	var b []byte
	if w.own && !w.start { // a line of gantryd's is under way: end it
		b = append(b, '\n')
	}
	for rest := p; ; {
		i := bytes.IndexByte(rest, Mark)
		if i < 0 {
			b = append(b, rest...)
			break
		}
		b = append(append(b, rest[:i]...), escapedMark...)
		rest = rest[i+1:]
	}
	if _, err := w.w.Write(b); err != nil {
		return 0, err
	}
	w.start, w.own = p[len(p)-1] == '\n', false
	return len(p), nil
}
