package registry

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gantry-ml/gantry"
)

// limiting answers the first n manifest PUTs with 429 and the Retry-After
// given, and passes everything else to inner.
func limiting(inner http.Handler, n int64, retryAfter string, limited *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && limited.Load() < n {
			limited.Add(1)
			w.Header().Set("Retry-After", retryAfter)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`))
			return
		}
		inner.ServeHTTP(w, r)
	})
}

// A registry answering 429 with Retry-After: 1 is waited out as it asks,
// the wait is logged naming the registry, and the push then succeeds with
// the digest the registry serves.
func TestPushHonoursRetryAfter(t *testing.T) {
	var limited atomic.Int64
	host := newRegistry(t, limiting(innerRegistry(), 2, "1", &limited))
	img, _ := random.Image(512, 2)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := New(WithKeychain(authn.NewMultiKeychain())).Push(ctx, img, []string{host + "/iris:v1"}, lines{&out})
	if err != nil {
		t.Fatalf("Push: %v\n%s", err, out.String())
	}
	if limited.Load() != 2 {
		t.Errorf("the registry answered %d 429s, want 2", limited.Load())
	}
	if want := "rate limited by " + host + " (429, Retry-After); retrying in 1s"; strings.Count(out.String(), want) != 2 {
		t.Errorf("the log should say twice %q:\n%s", want, out.String())
	}
	if d := head(t, host+"/iris:v1"); len(got) != 1 || got[0].Digest != d {
		t.Errorf("pushes %+v; the registry serves %s", got, d)
	}
}

// A Retry-After longer than MaxRetryAfter, or past the push's deadline,
// fails the push at once as unavailable, saying what the registry asked.
func TestPushRefusesAnOverlongRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name, retryAfter string
		timeout          time.Duration
	}{
		{"over the bound", "3600", time.Hour},
		{"past the deadline", "30", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var limited atomic.Int64
			host := newRegistry(t, limiting(innerRegistry(), 1, tc.retryAfter, &limited))
			img, _ := random.Image(256, 1)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			_, err := New(WithKeychain(authn.NewMultiKeychain())).Push(ctx, img, []string{host + "/iris:v1"}, gantry.Discard)
			if !errors.Is(err, gantry.ErrUnavailable) || !strings.Contains(err.Error(), "rate limited") || !strings.Contains(err.Error(), host) {
				t.Fatalf("Push: %v, want ErrUnavailable saying %s rate limited it", err, host)
			}
			if ctx.Err() != nil {
				t.Errorf("Push waited until its deadline; it should give up at once")
			}
		})
	}
}

// A registry that denies the push's scope (DENIED) fails the push with an
// error naming the repository and the registry and saying the credentials
// lack push access; it is not retried.
func TestPushNamesADeniedScope(t *testing.T) {
	var puts atomic.Int64
	inner := innerRegistry()
	host := newRegistry(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			puts.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`))
			return
		}
		inner.ServeHTTP(w, r)
	}))
	img, _ := random.Image(256, 1)
	_, err := New(WithKeychain(authn.NewMultiKeychain())).Push(context.Background(), img, []string{host + "/otheruser/repo:v1"}, gantry.Discard)
	if !errors.Is(err, gantry.ErrForbidden) {
		t.Fatalf("Push: %v, want ErrForbidden", err)
	}
	for _, want := range []string{"otheruser/repo", host, "lack push access", "docker login " + host} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if puts.Load() != 1 {
		t.Errorf("the manifest was PUT %d times; a denied push is not retried", puts.Load())
	}
}

func TestDenied(t *testing.T) {
	for _, tc := range []struct {
		err  transport.Error
		want bool
	}{
		{transport.Error{StatusCode: 401}, true},
		{transport.Error{StatusCode: 403}, true},
		{transport.Error{StatusCode: 400, Errors: []transport.Diagnostic{{Code: transport.DeniedErrorCode}}}, true},
		{transport.Error{StatusCode: 400, Errors: []transport.Diagnostic{{Code: transport.UnauthorizedErrorCode}}}, true},
		{transport.Error{StatusCode: 404, Errors: []transport.Diagnostic{{Code: transport.NameUnknownErrorCode}}}, false},
		{transport.Error{StatusCode: 429, Errors: []transport.Diagnostic{{Code: transport.TooManyRequestsErrorCode}}}, false},
	} {
		if got := denied(&tc.err); got != tc.want {
			t.Errorf("denied(%d %+v) = %v, want %v", tc.err.StatusCode, tc.err.Errors, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v, want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
