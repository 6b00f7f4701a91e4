package api

// The values of a job's --secret-env travel in a request header, never in
// the query string (which proxies and access logs keep) nor in the spec
// (which the record keeps).

import (
	"encoding/base64"
	"encoding/json"

	"github.com/gantry-ml/gantry"
)

// SecretEnvHeader is the header of POST /v1/jobs that carries the values of
// the spec's SecretEnv: the standard base64 of a JSON object from each name
// to its value.
const SecretEnvHeader = "Gantry-Secret-Env"

// MaxSecretBytes bounds the values of --secret-env, as their JSON object.
const MaxSecretBytes = 64 << 10

// EncodeSecrets is the SecretEnvHeader value that carries secrets; "" for
// none. It returns ErrTooLarge beyond MaxSecretBytes, and ErrInvalid for a
// value that is not valid UTF-8 (JSON would change it).
func EncodeSecrets(secrets map[string]string) (string, error) {
	if len(secrets) == 0 {
		return "", nil
	}
	data, err := json.Marshal(secrets)
	if err != nil {
		return "", err
	}
	if len(data) > MaxSecretBytes {
		return "", gantry.Errorf(gantry.ErrTooLarge, "secret-env: the values take %s, over the %s gantryd accepts; pass large secrets as a dataset instead",
			gantry.FormatBytes(int64(len(data))), gantry.FormatBytes(MaxSecretBytes))
	}
	var back map[string]string
	if json.Unmarshal(data, &back) != nil || len(back) != len(secrets) {
		return "", gantry.Errorf(gantry.ErrInvalid, "secret-env: a value is not valid UTF-8")
	}
	for k, v := range secrets {
		if back[k] != v {
			return "", gantry.Errorf(gantry.ErrInvalid, "secret-env %s: its value is not valid UTF-8", k)
		}
	}
	return base64.StdEncoding.EncodeToString(data), nil
}

// DecodeSecrets reads a SecretEnvHeader value; "" carries none (nil). It
// returns ErrTooLarge beyond MaxSecretBytes and ErrInvalid for a value that
// is not base64 of a JSON object of strings. Its errors never quote the
// value.
func DecodeSecrets(h string) (map[string]string, error) {
	if h == "" {
		return nil, nil
	}
	if len(h) > base64.StdEncoding.EncodedLen(MaxSecretBytes) {
		return nil, gantry.Errorf(gantry.ErrTooLarge, "%s: over %s once decoded", SecretEnvHeader, gantry.FormatBytes(MaxSecretBytes))
	}
	data, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "%s: not standard base64", SecretEnvHeader)
	}
	var secrets map[string]string
	if err := json.Unmarshal(data, &secrets); err != nil || secrets == nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "%s: want base64 of a JSON object from each --secret-env name to its value (a string)", SecretEnvHeader)
	}
	return secrets, nil
}
