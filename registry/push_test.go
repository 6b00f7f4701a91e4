package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
)

func newRegistry(t *testing.T, h http.Handler) string {
	t.Helper()
	if h == nil {
		h = innerRegistry()
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func TestPushRecordsTheDigestTheRegistryServes(t *testing.T) {
	host := newRegistry(t, nil)
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	refs := []string{host + "/iris:latest", host + "/iris:v1", host + "/other/iris"}
	var progress bytes.Buffer
	p := New(WithKeychain(authn.NewMultiKeychain()))
	got, err := p.Push(context.Background(), img, refs, lines{&progress})
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if len(got) != len(refs) {
		t.Fatalf("got %d pushes, want %d", len(got), len(refs))
	}
	want, _ := img.Digest()
	for i, push := range got {
		ref, _ := name.ParseReference(refs[i])
		served, err := remote.Head(ref)
		if err != nil {
			t.Fatalf("Head %s: %v", ref, err)
		}
		if push.Digest != served.Digest.String() {
			t.Errorf("%s: recorded digest %s, registry serves %s", refs[i], push.Digest, served.Digest)
		}
		if push.Digest != want.String() {
			t.Errorf("%s: recorded digest %s, image digest %s", refs[i], push.Digest, want)
		}
		if push.Ref != ref.Name() {
			t.Errorf("push %d: ref %q, want %q", i, push.Ref, ref.Name())
		}
	}
	if !strings.Contains(progress.String(), "pushed "+refs[0]) {
		t.Errorf("progress does not report the push of %s:\n%s", refs[0], progress.String())
	}
}

func TestPushNamesARefusingRegistry(t *testing.T) {
	host := newRegistry(t, refusingWrites(innerRegistry()))
	img, _ := random.Image(256, 1)
	_, err := New(WithKeychain(authn.NewMultiKeychain())).Push(context.Background(), img, []string{host + "/iris:latest"}, gantry.Discard)
	if err == nil {
		t.Fatal("Push to a refusing registry succeeded")
	}
	if !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "docker login") {
		t.Errorf("error %q should name the registry %s and say to log in", err, host)
	}
}

// setBackoff makes the retry waits short for the test and restores them.
func setBackoff(t *testing.T) {
	t.Helper()
	b, m := Backoff, MaxBackoff
	Backoff, MaxBackoff = 10*time.Millisecond, 40*time.Millisecond
	t.Cleanup(func() { Backoff, MaxBackoff = b, m })
}

// head returns the digest the registry serves for ref, or "" when it
// serves none.
func head(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("ParseReference(%s): %v", ref, err)
	}
	desc, err := remote.Head(r)
	if err != nil {
		return ""
	}
	return desc.Digest.String()
}

// syncBuffer collects progress written by Push and lets the test read it
// meanwhile; onLine, when set, sees each write.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	onLine func(string)
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf.Write(p)
	on := b.onLine
	b.mu.Unlock()
	if on != nil {
		on(string(p))
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// retries counts the retry lines in progress.
func retries(progress string) int { return strings.Count(progress, "; retrying in ") }

// unavailable answers 503 with a registry error body.
func unavailable(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}`)
}

// unauthorized answers 401 with a registry error body, as a registry does
// to credentials it refuses.
func unauthorized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
}

// refusingWrites is inner refusing the credentials of every write: reads
// pass, uploads and manifests do not.
func refusingWrites(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodPatch {
			unauthorized(w)
			return
		}
		inner.ServeHTTP(w, r)
	})
}

func innerRegistry() http.Handler {
	return ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
}

// TestPushRetriesAnUnavailableRegistry pushes to a registry whose first two
// answers are 503.
func TestPushRetriesAnUnavailableRegistry(t *testing.T) {
	setBackoff(t)
	var refused atomic.Int64
	inner := innerRegistry()
	host := newRegistry(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refused.Add(1) <= 2 {
			unavailable(w)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/iris:v1"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress syncBuffer
	got, err := New(WithKeychain(authn.NewMultiKeychain())).Push(ctx, img, []string{ref}, lines{&progress})
	if err != nil {
		t.Fatalf("Push: %v\nprogress:\n%s", err, progress.String())
	}
	want, _ := img.Digest()
	if len(got) != 1 || got[0].Ref != ref || got[0].Digest != want.String() {
		t.Errorf("pushes %v, want [{%s %s}]", got, ref, want)
	}
	if served := head(t, ref); served != want.String() {
		t.Errorf("registry serves %s for %s, want %s", served, ref, want)
	}
	p := progress.String()
	if n := retries(p); n != 2 {
		t.Errorf("progress holds %d retry lines, want 2:\n%s", n, p)
	}
	if !strings.Contains(p, "push to "+host+" failed") || !strings.Contains(p, "UNAVAILABLE") {
		t.Errorf("progress does not say which registry failed, and how:\n%s", p)
	}
	if !strings.Contains(p, "pushed "+ref+"@"+want.String()) {
		t.Errorf("progress does not report the push done:\n%s", p)
	}
}

func TestPushGivesUpAtTheDeadline(t *testing.T) {
	// The address of a registry that is down: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	inner := innerRegistry()
	always503 := newRegistry(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v2/" {
			unavailable(w)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	tests := []struct {
		name string
		host string
	}{
		{name: "always 503", host: always503},
		{name: "down", host: down},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setBackoff(t)
			img, _ := random.Image(256, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			deadline, _ := ctx.Deadline()
			var progress syncBuffer
			got, err := New(WithKeychain(authn.NewMultiKeychain())).Push(ctx, img, []string{tc.host + "/iris:v1"}, lines{&progress})
			if err == nil {
				t.Fatalf("Push succeeded (%v), want an error", got)
			}
			if time.Now().Before(deadline) {
				t.Errorf("Push gave up before the deadline with %v, want it to retry until then", err)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Push error %v, want it to wrap context.DeadlineExceeded", err)
			}
			if !strings.Contains(err.Error(), tc.host) {
				t.Errorf("Push error %q does not name the registry %s", err, tc.host)
			}
			if len(got) != 0 {
				t.Errorf("pushes %v, want none", got)
			}
			if n := retries(progress.String()); n == 0 {
				t.Errorf("progress holds no retry line, want retries until the deadline:\n%s", progress.String())
			}
		})
	}
}

func TestPushDoesNotRetryRefusedCredentials(t *testing.T) {
	setBackoff(t)
	inner := innerRegistry()
	var pings, writes atomic.Int64
	host := newRegistry(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v2/":
			pings.Add(1)
		case r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodPatch:
			writes.Add(1)
			unauthorized(w)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	img, _ := random.Image(256, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress syncBuffer
	_, err := New(WithKeychain(authn.NewMultiKeychain())).Push(ctx, img, []string{host + "/iris:v1"}, lines{&progress})
	if err == nil {
		t.Fatal("Push to a registry that refuses the credentials succeeded")
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Push error %v: want it to fail at once, not at the deadline", err)
	}
	if !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "docker login") {
		t.Errorf("error %q should name the registry %s and say to log in", err, host)
	}
	if n := retries(progress.String()); n != 0 {
		t.Errorf("progress holds %d retry lines, want none:\n%s", n, progress.String())
	}
	// One attempt: one ping, and one upload started per blob (two: the
	// layer and the config) at most.
	if pings.Load() != 1 || writes.Load() < 1 || writes.Load() > 2 {
		t.Errorf("registry saw %d pings and %d writes, want one attempt's worth (1 ping, 1 or 2 writes)", pings.Load(), writes.Load())
	}
}

func TestPushReturnsThePushesDone(t *testing.T) {
	setBackoff(t)
	good := newRegistry(t, nil)
	refusing := newRegistry(t, refusingWrites(innerRegistry()))
	img, _ := random.Image(256, 1)
	refs := []string{good + "/iris:v1", refusing + "/iris:v1", good + "/iris:never"}
	var progress syncBuffer
	got, err := New(WithKeychain(authn.NewMultiKeychain())).Push(context.Background(), img, refs, lines{&progress})
	if err == nil || !strings.Contains(err.Error(), refusing) {
		t.Errorf("Push error %v, want one naming the refusing registry %s", err, refusing)
	}
	// The first went alone; the others at once, so the one after the
	// refused one moved too, and is returned with the first: whatever
	// moved is told.
	want, _ := img.Digest()
	if len(got) != 2 || got[0].Ref != refs[0] || got[1].Ref != refs[2] || got[0].Digest != want.String() || got[1].Digest != want.String() {
		t.Errorf("pushes %v, want [{%s %s} {%s %s}]", got, refs[0], want, refs[2], want)
	}
	if served := head(t, refs[2]); served != want.String() {
		t.Errorf("%s serves %q, want %s, the digest Push returned", refs[2], served, want)
	}
	if !strings.Contains(progress.String(), "pushed "+refs[0]+"@"+want.String()) {
		t.Errorf("progress does not report the push done:\n%s", progress.String())
	}
}

func TestPushRefusesABadRefBeforePushing(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	inner := innerRegistry()
	host := newRegistry(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		inner.ServeHTTP(w, r)
	}))
	img, _ := random.Image(256, 1)
	got, err := New(WithKeychain(authn.NewMultiKeychain())).Push(context.Background(), img, []string{host + "/iris:v1", "Bad Ref"}, gantry.Discard)
	if !errors.Is(err, gantry.ErrInvalid) || got != nil {
		t.Errorf("Push = %v, %v; want nil, ErrInvalid", got, err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("registry saw %d requests, want none: refs are checked before anything is pushed", n)
	}
}

// TestPushDoesNotRetryAPermanentError pushes to a registry whose address
// speaks plain HTTP where HTTPS is expected: no retry can mend that.
func TestPushDoesNotRetryAPermanentError(t *testing.T) {
	setBackoff(t)
	plain := httptest.NewServer(innerRegistry())
	t.Cleanup(plain.Close)
	// registry.example resolves, through this transport, to the plain
	// HTTP server.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, plain.Listener.Addr().String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	progress := &syncBuffer{onLine: func(s string) {
		if strings.Contains(s, "; retrying in ") {
			cancel() // seen enough: end the push now
		}
	}}
	img, _ := random.Image(256, 1)
	_, err := New(WithKeychain(authn.NewMultiKeychain()), WithTransport(tr)).Push(ctx, img, []string{"registry.example/iris:v1"}, lines{progress})
	if err == nil {
		t.Fatal("Push succeeded")
	}
	if n := retries(progress.String()); n != 0 {
		t.Errorf("progress holds %d retry lines, want none:\n%s", n, progress.String())
	}
	if !strings.Contains(err.Error(), "registry.example") || errors.Is(err, context.Canceled) {
		t.Errorf("Push error %v, want the registry's own error, naming it", err)
	}
}
