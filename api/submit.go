package api

// Submissions: a job and a sweep are submitted the same way.

import (
	"context"
	"io"
	"net/http"

	"github.com/gantry-ml/gantry"
)

func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	submission(s, w, r, DecodeSpec, func(ctx context.Context, spec gantry.Spec, secrets map[string]string, body io.Reader) (any, error) {
		return s.svc.Submit(ctx, spec, secrets, body)
	})
}

// submission answers what POST /v1/jobs and /v1/sweeps share: the spec in
// the query (read by decode), the secrets' values in SecretEnvHeader, the
// build context as the body; 201 with the record submit made.
func submission[T any](s *server, w http.ResponseWriter, r *http.Request, decode func([]byte) (T, error),
	submit func(context.Context, T, map[string]string, io.Reader) (any, error)) {
	raw := r.URL.Query().Get("spec")
	if raw == "" {
		raw = "{}"
	}
	spec, err := decode([]byte(raw))
	if err == nil {
		var secrets map[string]string
		var ctx context.Context
		if secrets, err = DecodeSecrets(r.Header.Get(SecretEnvHeader)); err == nil {
			ctx, err = withBuildSecrets(r) // buildsecrets.go
		}
		if err == nil {
			var v any
			if v, err = submit(ctx, spec, secrets, r.Body); err == nil {
				s.json(w, http.StatusCreated, v)
				return
			}
		}
	}
	s.error(w, r, err)
}
