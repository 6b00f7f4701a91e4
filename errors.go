package gantry

import (
	"errors"
	"fmt"
)

// The kinds of error. Every error gantry returns wraps one of these, so that
// callers (and api/, which maps them to HTTP status codes) can tell them apart
// with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrInvalid     = errors.New("invalid")
	ErrConflict    = errors.New("conflict")
	ErrTooLarge    = errors.New("too large")
	ErrUnavailable = errors.New("unavailable")
	// ErrForbidden: the operator's policy does not allow what was asked.
	ErrForbidden = errors.New("forbidden")
	// ErrTooMany: a bound on work waiting (the queue) is reached; try later.
	ErrTooMany = errors.New("too many")
)

// kindError carries a human message and the kind it is of.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Errorf returns an error of the given kind whose message is the formatted
// text alone (the kind is for errors.Is, not for the user to read).
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Kind returns which of the error kinds err is of, or nil when it is none.
func Kind(err error) error {
	for _, k := range []error{ErrNotFound, ErrInvalid, ErrConflict, ErrTooLarge, ErrUnavailable, ErrForbidden, ErrTooMany} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
