package push

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
)

func newRegistry(t *testing.T, h http.Handler) string {
	t.Helper()
	if h == nil {
		h = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
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
	got, err := p.Push(context.Background(), img, refs, &progress)
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
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	host := newRegistry(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || r.Method == http.MethodPost || r.Method == http.MethodPatch {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	img, _ := random.Image(256, 1)
	_, err := New(WithKeychain(authn.NewMultiKeychain())).Push(context.Background(), img, []string{host + "/iris:latest"}, io.Discard)
	if err == nil {
		t.Fatal("Push to a refusing registry succeeded")
	}
	if !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "docker login") {
		t.Errorf("error %q should name the registry %s and say to log in", err, host)
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.1:5000/ml-docker-app:latest", "127.0.0.1:5000/ml-docker-app:latest", true},
		{"127.0.0.1:5000/ml-docker-app", "127.0.0.1:5000/ml-docker-app:latest", true},
		{"registry.example.com/team/iris:v2", "registry.example.com/team/iris:v2", true},
		{"", "", false},
		{"UPPER/case", "", false},
		{"127.0.0.1:5000/iris@sha256:" + strings.Repeat("a", 64), "", false},
		{"bad ref with spaces", "", false},
	} {
		got, err := ParseRef(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRef(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Errorf("ParseRef(%q) error %v is not ErrInvalid", tc.in, err)
			}
			continue
		}
		if got.Name() != tc.want {
			t.Errorf("ParseRef(%q) = %q, want %q", tc.in, got.Name(), tc.want)
		}
	}
}
