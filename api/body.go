package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// BodyLimits bound how slowly a request body may arrive, so that a client
// cannot hold a connection (and a build context's unpacking) open by
// sending a byte now and then.
type BodyLimits struct {
	// Idle is the longest wait for the next bytes.
	Idle time.Duration
	// After Grace, the body's average rate since its first read must stay
	// at MinRate bytes per second or more (0: no floor).
	Grace   time.Duration
	MinRate int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultBodyLimits are gantryd's: a body stalled for 30 s, or averaging
// under 64 KiB/s after its first 10 s, ends its request.
var DefaultBodyLimits = BodyLimits{Idle: 30 * time.Second, Grace: 10 * time.Second, MinRate: 64 << 10}

// BoundBodies hands h requests whose body ends with an error once it breaks
// lim; the API then answers 408, saying which bound was broken. A body is
// bounded through its connection's read deadline, which is lifted once the
// body has been read to its end (a followed answer is not bounded).
func BoundBodies(h http.Handler, lim BodyLimits) http.Handler {
	if lim.Now == nil {
		lim.Now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		b := &boundedBody{body: r.Body, lim: lim, setDeadline: http.NewResponseController(w).SetReadDeadline}
		r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, b))
		r.Body = b
		h.ServeHTTP(w, r)
	})
}

type bodyKey struct{}

// errSlowBody is the error of a body that broke its BodyLimits.
var errSlowBody = errors.New("request body too slow")

// slowBody returns the error of r's body when it broke its limits, or nil.
func slowBody(r *http.Request) error {
	if b, ok := r.Context().Value(bodyKey{}).(*boundedBody); ok && errors.Is(b.err, errSlowBody) {
		return b.err
	}
	return nil
}

// boundedBody is a request body read under BodyLimits. Reads come from one
// goroutine, the handler's.
type boundedBody struct {
	body        io.ReadCloser
	lim         BodyLimits
	setDeadline func(time.Time) error

	start time.Time
	n     int64
	err   error // the error that ended the body, kept
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	now := b.lim.Now()
	if b.start.IsZero() {
		b.start = now
	}
	idle, deadline := true, now.Add(b.lim.Idle)
	if b.lim.MinRate > 0 {
		// The moment the average falls under the floor unless more comes.
		floor := b.start.Add(max(b.lim.Grace, time.Duration(float64(b.n)/float64(b.lim.MinRate)*float64(time.Second))))
		if floor.Before(deadline) {
			idle, deadline = false, floor
		}
	}
	b.setDeadline(deadline)
	n, err := b.body.Read(p)
	b.n += int64(n)
	now = b.lim.Now()
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout() && idle:
		err = fmt.Errorf("%w: no bytes for %v", errSlowBody, b.lim.Idle)
	case errors.As(err, &ne) && ne.Timeout(), err == nil && b.slow(now):
		err = fmt.Errorf("%w: %d bytes in %v, under the %d bytes/s gantryd asks for after %v",
			errSlowBody, b.n, now.Sub(b.start).Round(time.Millisecond), b.lim.MinRate, b.lim.Grace)
	}
	switch {
	case err == io.EOF:
		// Read to its end: lift the deadline, which would otherwise end the
		// server's watch on the connection while the answer streams.
		b.setDeadline(time.Time{})
	case errors.Is(err, errSlowBody):
		// The rest is not worth waiting for: the server's own reads of
		// what remains fail at once, and it closes the connection.
		b.setDeadline(now)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// slow says whether the body's average rate is under the floor at now.
func (b *boundedBody) slow(now time.Time) bool {
	elapsed := now.Sub(b.start)
	return b.lim.MinRate > 0 && elapsed > b.lim.Grace && float64(b.n) < float64(b.lim.MinRate)*elapsed.Seconds()
}

func (b *boundedBody) Close() error { return b.body.Close() }
