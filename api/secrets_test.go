package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

func TestSecretsHeaderRoundTrip(t *testing.T) {
	for _, in := range []map[string]string{
		nil,
		{"TOKEN": "s3cr3t"},
		{"A": "", "B": "line\nbreak \"quoted\" =", "C": "ünïcødé"},
		{"BIG": strings.Repeat("x", MaxSecretBytes-len(`{"BIG":""}`))},
	} {
		h, err := EncodeSecrets(in)
		if err != nil {
			t.Fatalf("EncodeSecrets(%d values): %v", len(in), err)
		}
		if len(in) == 0 && h != "" {
			t.Errorf("EncodeSecrets(none) = %q, want no header", h)
		}
		got, err := DecodeSecrets(h)
		if err != nil || !maps.Equal(got, in) {
			t.Errorf("DecodeSecrets(EncodeSecrets(%d values)) = %d values, %v; want them back", len(in), len(got), err)
		}
	}
}

func TestSecretsHeaderRefusals(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name   string
		header string
		kind   error
	}{
		{"not base64", "!!!", gantry.ErrInvalid},
		{"not JSON", b64([]byte("TOKEN=s3cr3t")), gantry.ErrInvalid},
		{"not an object", b64([]byte(`["s3cr3t"]`)), gantry.ErrInvalid},
		{"null", b64([]byte(`null`)), gantry.ErrInvalid},
		{"a number", b64([]byte(`{"TOKEN":12}`)), gantry.ErrInvalid},
		{"too large", b64([]byte(`{"A":"` + strings.Repeat("s", MaxSecretBytes) + `"}`)), gantry.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeSecrets(tc.header)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("DecodeSecrets: %v, want %v", err, tc.kind)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "sss") {
				t.Errorf("the error quotes the value: %v", err)
			}
		})
	}
	_, err := EncodeSecrets(map[string]string{"A": strings.Repeat("s", MaxSecretBytes)})
	if !errors.Is(err, gantry.ErrTooLarge) || !strings.Contains(err.Error(), "64k") {
		t.Errorf("EncodeSecrets(over 64 KiB): %v, want ErrTooLarge saying 64k", err)
	}
	_, err = EncodeSecrets(map[string]string{"A": "\xff"})
	if !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("EncodeSecrets(not UTF-8): %v, want ErrInvalid", err)
	}
}

// The secrets reach the service from the header, not from the query string
// or the spec; a header beyond the bound is answered 413 before the service
// is called.
func TestSubmitCarriesSecretsInAHeader(t *testing.T) {
	var got map[string]string
	var gotQuery string
	svc := &fakeService{submit: func(ctx context.Context, s gantry.Spec, secrets map[string]string, tar io.Reader) (*gantry.Job, error) {
		got = secrets
		return &gantry.Job{ID: "0123456789abcdef", Spec: s}, nil
	}}
	base := serveHTTP(t, svc)
	// Read what the client sends on the way.
	var sent http.Header
	c := serveClient(t, svc)
	tr := c.http.Transport
	c.http.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent, gotQuery = r.Header.Clone(), r.URL.RawQuery
		return tr.RoundTrip(r)
	})
	spec := gantry.Spec{Run: gantry.RunSpec{SecretEnv: []string{"TOKEN"}}}
	if _, err := c.Submit(context.Background(), spec, map[string]string{"TOKEN": "s3cr3t"}, strings.NewReader("tar")); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if got["TOKEN"] != "s3cr3t" || len(got) != 1 {
		t.Errorf("the service got %d secrets (TOKEN set: %v), want TOKEN", len(got), got["TOKEN"] == "s3cr3t")
	}
	if sent.Get(SecretEnvHeader) == "" || strings.Contains(gotQuery, "s3cr3t") {
		t.Errorf("sent header %q, query %q; want the value in %s only", sent.Get(SecretEnvHeader), gotQuery, SecretEnvHeader)
	}

	got = nil
	big := base64.StdEncoding.EncodeToString([]byte(`{"A":"` + strings.Repeat("s", MaxSecretBytes) + `"}`))
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs?spec="+url.QueryEscape(`{}`), bytes.NewReader(nil))
	req.Header.Set(SecretEnvHeader, big)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || got != nil {
		t.Errorf("a header over the bound: status %d, service called %v; want 413 and no call", resp.StatusCode, got != nil)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
