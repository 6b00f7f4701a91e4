// Package iox holds the io helpers gantryd and the gantry CLI share.
package iox

import "io"

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
