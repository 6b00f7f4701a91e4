// Package webhook signs and verifies webhook messages in the Standard
// Webhooks scheme (https://www.standardwebhooks.com): the headers
// webhook-id, webhook-timestamp (unix seconds) and webhook-signature
// ("v1," and the base64 HMAC-SHA256, under the secret's key, of
// "ID.TIMESTAMP.BODY"). A secret is written "whsec_" and the key in base64.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
)

// The headers of a signed message.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix marks a secret in the Standard Webhooks form.
const secretPrefix = "whsec_"

// Tolerance is how far a message's timestamp may be from the receiver's
// clock before Verify refuses it (a replay).
const Tolerance = 5 * time.Minute

// ParseSecret returns the key of secret, "whsec_" and the key in base64
// (surrounding white space, as a file holds it, is ignored). It returns
// ErrInvalid for anything else, or a key under 24 bytes.
func ParseSecret(secret string) ([]byte, error) {
	s, ok := strings.CutPrefix(strings.TrimSpace(secret), secretPrefix)
	if !ok {
		return nil, gantry.Errorf(gantry.ErrInvalid, "webhook secret: want whsec_ and the key in base64")
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "webhook secret: the part after whsec_ is not base64: %v", err)
	}
	if len(key) < 24 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "webhook secret: the key has %d bytes, want at least 24", len(key))
	}
	return key, nil
}

// FormatSecret writes key as a secret: "whsec_" and the key in base64.
func FormatSecret(key []byte) string {
	return secretPrefix + base64.StdEncoding.EncodeToString(key)
}

// Sign returns the webhook-signature value of the message id sent at ts
// with body: "v1," and the base64 HMAC-SHA256 of "id.ts.body" under key.
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, ts.Unix(), body))
}

func mac(key []byte, id string, unix int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(strconv.FormatInt(unix, 10)))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// SetHeaders sets h's webhook headers for the message id sent at ts with
// body, signed with key.
func SetHeaders(h http.Header, key []byte, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(key, id, ts, body))
}

// Verify checks the webhook headers h of body against key, as a receiver
// does at now: the timestamp is within Tolerance of now and one of the
// space-separated v1 signatures matches. It returns ErrInvalid for missing
// or malformed headers, ErrForbidden for a stale timestamp or no matching
// signature.
func Verify(key []byte, h http.Header, body []byte, now time.Time) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return gantry.Errorf(gantry.ErrInvalid, "webhook: missing %s, %s or %s", HeaderID, HeaderTimestamp, HeaderSignature)
	}
	unix, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return gantry.Errorf(gantry.ErrInvalid, "webhook: %s %q is not unix seconds", HeaderTimestamp, tsText)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > Tolerance || d < -Tolerance {
		return gantry.Errorf(gantry.ErrForbidden, "webhook: timestamp %d is %v from now, over the %v tolerated", unix, d.Round(time.Second), Tolerance)
	}
	want := mac(key, id, unix, body)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return gantry.Errorf(gantry.ErrForbidden, "webhook: no signature matches")
}
