package gantry

import (
	"errors"
	"strings"
	"testing"
)

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
		// Docker Hub's names, as docker push reads them.
		{"user/ml-docker-app:1", "index.docker.io/user/ml-docker-app:1", true},
		{"ml-docker-app", "index.docker.io/library/ml-docker-app:latest", true},
	} {
		got, err := ParseRef(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRef(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseRef(%q) error %v is not ErrInvalid", tc.in, err)
			}
			continue
		}
		if got.Name() != tc.want {
			t.Errorf("ParseRef(%q) = %q, want %q", tc.in, got.Name(), tc.want)
		}
	}
}

// TestRepository: one answer to "which repository is this reference in",
// whichever way the reference is written.
func TestRepository(t *testing.T) {
	for _, tc := range []struct{ ref, want string }{
		{"127.0.0.1:5000/iris:v1", "127.0.0.1:5000/iris"},
		{"127.0.0.1:5000/iris", "127.0.0.1:5000/iris"},
		{"user/ml-docker-app:1", "index.docker.io/user/ml-docker-app"},
		{"docker.io/user/ml-docker-app:2", "index.docker.io/user/ml-docker-app"},
		{"index.docker.io/user/ml-docker-app", "index.docker.io/user/ml-docker-app"},
		{"ml-docker-app", "index.docker.io/library/ml-docker-app"},
	} {
		if got := Repository(tc.ref); got != tc.want {
			t.Errorf("Repository(%q) = %q, want %q", tc.ref, got, tc.want)
		}
		j := Job{Spec: Spec{Push: []string{tc.ref}}}
		if got := j.Name(); got != tc.want {
			t.Errorf("Job.Name() of a push to %q = %q, want %q", tc.ref, got, tc.want)
		}
	}
}
