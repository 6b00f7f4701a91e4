package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// The Standard Webhooks reference libraries' test vector.
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS     = 1614265330
	vectorBody   = `{"test": 2432232314}`
	vectorSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignVector(t *testing.T) {
	key, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := Sign(key, vectorID, time.Unix(vectorTS, 0), []byte(vectorBody)); got != vectorSig {
		t.Errorf("Sign = %q, want the spec's %q", got, vectorSig)
	}
	h := http.Header{}
	h.Set(HeaderID, vectorID)
	h.Set(HeaderTimestamp, "1614265330")
	h.Set(HeaderSignature, "v1,bm9wZQ== "+vectorSig)
	if err := Verify(key, h, []byte(vectorBody), time.Unix(vectorTS+10, 0)); err != nil {
		t.Errorf("Verify the spec's vector: %v", err)
	}
}

// TestSignIndependent checks Sign against HMAC-SHA256 computed here, over
// the content the spec names.
func TestSignIndependent(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	ts := time.Unix(1700000000, 0)
	body := []byte(`{"type":"job.ended"}`)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("msg_1.1700000000." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := Sign(key, "msg_1", ts, body); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
	s := FormatSecret(key)
	back, err := ParseSecret(s + "\n")
	if err != nil || string(back) != string(key) {
		t.Errorf("ParseSecret(FormatSecret(key)) = %q, %v; want the key", back, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	key, _ := ParseSecret(vectorSecret)
	now := time.Unix(vectorTS, 0)
	good := func() http.Header {
		h := http.Header{}
		SetHeaders(h, key, vectorID, now, []byte(vectorBody))
		return h
	}
	for _, tc := range []struct {
		name string
		edit func(http.Header) ([]byte, time.Time)
		want error
	}{
		{"ok", func(h http.Header) ([]byte, time.Time) { return []byte(vectorBody), now }, nil},
		{"body changed", func(h http.Header) ([]byte, time.Time) { return []byte(`{"test": 1}`), now }, gantry.ErrForbidden},
		{"id changed", func(h http.Header) ([]byte, time.Time) { h.Set(HeaderID, "msg_2"); return []byte(vectorBody), now }, gantry.ErrForbidden},
		{"stale", func(h http.Header) ([]byte, time.Time) { return []byte(vectorBody), now.Add(10 * time.Minute) }, gantry.ErrForbidden},
		{"no signature", func(h http.Header) ([]byte, time.Time) { h.Del(HeaderSignature); return []byte(vectorBody), now }, gantry.ErrInvalid},
		{"bad timestamp", func(h http.Header) ([]byte, time.Time) { h.Set(HeaderTimestamp, "x"); return []byte(vectorBody), now }, gantry.ErrInvalid},
		{"v2 only", func(h http.Header) ([]byte, time.Time) {
			h.Set(HeaderSignature, "v2"+h.Get(HeaderSignature)[2:])
			return []byte(vectorBody), now
		}, gantry.ErrForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good()
			body, at := tc.edit(h)
			err := Verify(key, h, body, at)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseSecretRefuses(t *testing.T) {
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_c2hvcnQ="} {
		if _, err := ParseSecret(s); !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("ParseSecret(%q) = %v, want ErrInvalid", s, err)
		}
	}
}
