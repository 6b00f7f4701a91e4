// Package iox holds the io helpers that gantryd's packages and the gantry
// CLI share.
package iox

import (
	"bytes"
	"io"
)

// SkipWriter drops the first Skip bytes written to it and passes the rest
// to W. A stream replayed from its start (a container's log after a
// re-attach, a build's status after a reconnect) goes through one whose
// Skip is what was already taken.
type SkipWriter struct {
	W    io.Writer
	Skip int64
}

// Write reports all of p as written once W took what was not skipped.
func (s *SkipWriter) Write(p []byte) (int, error) {
	n := len(p)
	drop := min(s.Skip, int64(len(p)))
	s.Skip -= drop
	if p = p[drop:]; len(p) == 0 {
		return n, nil
	}
	if _, err := s.W.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// LineSplitter is an io.Writer that hands each complete line, without its
// newline, to a function; Flush hands on a last line that had none. A line
// longer than its maximum is dropped whole.
type LineSplitter struct {
	fn      func(string)
	max     int
	buf     []byte
	discard bool // the current line ran over max
}

// NewLineSplitter returns a LineSplitter calling fn with each line of at
// most max bytes (0: no limit).
func NewLineSplitter(max int, fn func(string)) *LineSplitter {
	return &LineSplitter{fn: fn, max: max}
}

func (l *LineSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.add(p)
			break
		}
		l.add(p[:i])
		l.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (l *LineSplitter) add(p []byte) {
	if l.discard {
		return
	}
	if l.max > 0 && len(l.buf)+len(p) > l.max {
		l.discard = true
		l.buf = l.buf[:0]
		return
	}
	l.buf = append(l.buf, p...)
}

func (l *LineSplitter) emit() {
	if !l.discard {
		l.fn(string(l.buf))
	}
	l.buf, l.discard = l.buf[:0], false
}

// Flush hands on a last line that had no newline.
func (l *LineSplitter) Flush() {
	if len(l.buf) > 0 || l.discard {
		l.emit()
	}
}
