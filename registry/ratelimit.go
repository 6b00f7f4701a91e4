package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gantry-ml/gantry"
)

// MaxRetryAfter bounds how long a push waits when a registry answers 429
// with a Retry-After: a registry asking for longer fails the push, naming
// the wait it asked for.
var MaxRetryAfter = 60 * time.Second

// retryAfterKey is the context key of the note an attempt's requests leave
// their 429's Retry-After in: go-containerregistry's transport.Error keeps
// the status and the body of a response, not its headers.
type retryAfterKey struct{}

// retryAfterNote holds the last Retry-After a registry answered an
// attempt's requests with.
type retryAfterNote struct {
	mu  sync.Mutex
	d   time.Duration
	set bool
}

func (n *retryAfterNote) put(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.d, n.set = d, true
}

func (n *retryAfterNote) get() (time.Duration, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.d, n.set
}

func withRetryAfterNote(ctx context.Context) (context.Context, *retryAfterNote) {
	n := &retryAfterNote{}
	return context.WithValue(ctx, retryAfterKey{}, n), n
}

// retryAfterTransport notes, in the note of the request's context, the
// Retry-After of every 429 answer.
type retryAfterTransport struct{ inner http.RoundTripper }

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		return resp, err
	}
	if n, ok := req.Context().Value(retryAfterKey{}).(*retryAfterNote); ok {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			n.put(d)
		}
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After value, seconds or an HTTP date
// (RFC 9110 10.2.3), as the wait from now.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, 1<<30)) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

// rateLimitWait returns how long to wait before the next attempt when err
// is a 429 whose Retry-After note holds a wait, and whether it is one. It
// returns an error when the registry asks for longer than MaxRetryAfter or
// than ctx has left.
func rateLimitWait(ctx context.Context, t name.Tag, err error, n *retryAfterNote) (time.Duration, bool, error) {
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusTooManyRequests {
		return 0, false, nil
	}
	d, ok := n.get()
	if !ok {
		return 0, false, nil
	}
	reg := t.RegistryStr()
	if d > MaxRetryAfter {
		return 0, true, fmt.Errorf("%w: push to %s: the registry rate limited the push and asks to wait %v, more than gantryd waits (%v); submit again later: %w", gantry.ErrUnavailable, reg, d, MaxRetryAfter, err)
	}
	if dl, ok := ctx.Deadline(); ok && time.Now().Add(d).After(dl) {
		return 0, true, fmt.Errorf("%w: push to %s: the registry rate limited the push and asks to wait %v, past the push's deadline: %w", gantry.ErrUnavailable, reg, d, err)
	}
	return d, true, nil
}

// denied reports whether the registry refused the request's credentials or
// their scope: a 401 or 403, or an UNAUTHORIZED or DENIED error code.
func denied(terr *transport.Error) bool {
	if terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden {
		return true
	}
	return slices.ContainsFunc(terr.Errors, func(d transport.Diagnostic) bool {
		return d.Code == transport.UnauthorizedErrorCode || d.Code == transport.DeniedErrorCode
	})
}

// deniedError says which repository of which registry the credentials may
// not push to, and what to do about it.
func deniedError(t name.Tag, terr *transport.Error) error {
	reg, login := t.RegistryStr(), "docker login "+t.RegistryStr()
	if reg == name.DefaultRegistry {
		login = "docker login"
	}
	return fmt.Errorf("%w: push: registry %s refused the credentials: they lack push access to %s (run %s as a user who may push there, or push to a repository of your own): %w",
		gantry.ErrForbidden, reg, t.RepositoryStr(), login, terr)
}
