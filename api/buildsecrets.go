package api

// The values of a job's build secrets (gantry submit --secret) travel in
// request headers, one per secret, never in the query string nor in the
// spec (which records their IDs only). The API hands them to the service
// in the request's context (gantry.WithBuildSecrets).

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/gantry-ml/gantry"
)

// BuildSecretHeader is the header of POST /v1/jobs and /v1/sweeps that
// carries one build secret: "ID=BASE64", the standard base64 of its value.
// It comes once per secret (or as one comma-separated list, as proxies fold
// repeated headers).
const BuildSecretHeader = "Gantry-Build-Secret"

// EncodeBuildSecrets adds the BuildSecretHeader values that carry vals to
// h. It returns ErrInvalid for an ID that cannot name a build secret and
// ErrTooLarge beyond the bounds (gantry.MaxBuildSecretBytes each,
// gantry.MaxBuildSecretsBytes in all).
func EncodeBuildSecrets(h http.Header, vals map[string][]byte) error {
	total := 0
	for id, v := range vals {
		if !gantry.ValidBuildSecretID(id) {
			return gantry.Errorf(gantry.ErrInvalid, "build secret id %q: want 1 to 128 letters, digits, '_', '.' or '-'", id)
		}
		if len(v) > gantry.MaxBuildSecretBytes {
			return gantry.Errorf(gantry.ErrTooLarge, "build secret %s: %s, over the %s gantryd accepts", id,
				gantry.FormatBytes(int64(len(v))), gantry.FormatBytes(gantry.MaxBuildSecretBytes))
		}
		total += len(v)
		h.Add(BuildSecretHeader, id+"="+base64.StdEncoding.EncodeToString(v))
	}
	if total > gantry.MaxBuildSecretsBytes {
		return gantry.Errorf(gantry.ErrTooLarge, "build secrets: %s together, over the %s gantryd accepts",
			gantry.FormatBytes(int64(total)), gantry.FormatBytes(gantry.MaxBuildSecretsBytes))
	}
	return nil
}

// DecodeBuildSecrets reads the BuildSecretHeader values of h; none gives
// nil. It returns ErrInvalid for a value that is not ID=BASE64 or an ID
// given twice, and ErrTooLarge beyond the bounds. Its errors never quote a
// value.
func DecodeBuildSecrets(h http.Header) (map[string][]byte, error) {
	var vals map[string][]byte
	total := 0
	for _, line := range h.Values(BuildSecretHeader) {
		for _, item := range strings.Split(line, ",") {
			if item = strings.TrimSpace(item); item == "" {
				continue
			}
			id, enc, ok := strings.Cut(item, "=")
			if !ok || !gantry.ValidBuildSecretID(id) {
				return nil, gantry.Errorf(gantry.ErrInvalid, "%s: want ID=BASE64, one per build secret", BuildSecretHeader)
			}
			if len(enc) > base64.StdEncoding.EncodedLen(gantry.MaxBuildSecretBytes) {
				return nil, tooLargeSecret(id)
			}
			v, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return nil, gantry.Errorf(gantry.ErrInvalid, "build secret %s: its value is not standard base64", id)
			}
			if len(v) > gantry.MaxBuildSecretBytes {
				return nil, tooLargeSecret(id)
			}
			if _, dup := vals[id]; dup {
				return nil, gantry.Errorf(gantry.ErrInvalid, "build secret %s: given twice", id)
			}
			if total += len(v); total > gantry.MaxBuildSecretsBytes {
				return nil, gantry.Errorf(gantry.ErrTooLarge, "build secrets: over the %s gantryd accepts together", gantry.FormatBytes(gantry.MaxBuildSecretsBytes))
			}
			if vals == nil {
				vals = map[string][]byte{}
			}
			vals[id] = v
		}
	}
	return vals, nil
}

func tooLargeSecret(id string) error {
	return gantry.Errorf(gantry.ErrTooLarge, "build secret %s: over the %s gantryd accepts", id, gantry.FormatBytes(gantry.MaxBuildSecretBytes))
}

// withBuildSecrets is r's context carrying the build secrets of its
// headers, for the service's Submit or SubmitSweep.
func withBuildSecrets(r *http.Request) (context.Context, error) {
	vals, err := DecodeBuildSecrets(r.Header)
	if err != nil {
		return nil, err
	}
	return gantry.WithBuildSecrets(r.Context(), vals), nil
}
