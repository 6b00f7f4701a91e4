package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

func TestBuildSecretsHeaderRoundTrip(t *testing.T) {
	for _, in := range []map[string][]byte{
		nil,
		{"token": []byte("s3cr3t")},
		{"a": {0, 0xff, ',', '='}, "b.c-d_e": []byte(""), "big": bytes.Repeat([]byte("x"), gantry.MaxBuildSecretBytes)},
	} {
		h := http.Header{}
		if err := EncodeBuildSecrets(h, in); err != nil {
			t.Fatalf("EncodeBuildSecrets(%d values): %v", len(in), err)
		}
		// A proxy may fold the repeated header into one list.
		folded := http.Header{BuildSecretHeader: {strings.Join(h.Values(BuildSecretHeader), ", ")}}
		for _, hh := range []http.Header{h, folded} {
			got, err := DecodeBuildSecrets(hh)
			if err != nil || len(got) != len(in) {
				t.Fatalf("DecodeBuildSecrets = %d values, %v; want %d", len(got), err, len(in))
			}
			for k, v := range in {
				if !bytes.Equal(got[k], v) {
					t.Errorf("secret %s came back changed", k)
				}
			}
		}
	}
}

func TestBuildSecretsHeaderRefusals(t *testing.T) {
	big := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("s"), gantry.MaxBuildSecretBytes+1))
	mid := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("s"), gantry.MaxBuildSecretBytes))
	for _, tc := range []struct {
		name   string
		values []string
		kind   error
	}{
		{"no equals", []string{"token"}, gantry.ErrInvalid},
		{"bad id", []string{"../x=YQ=="}, gantry.ErrInvalid},
		{"not base64", []string{"token=%%%"}, gantry.ErrInvalid},
		{"twice", []string{"token=YQ==", "token=Yg=="}, gantry.ErrInvalid},
		{"one too large", []string{"token=" + big}, gantry.ErrTooLarge},
		{"all too large", []string{"a=" + mid, "b=" + mid, "c=" + mid, "d=" + mid, "e=" + mid}, gantry.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeBuildSecrets(http.Header{BuildSecretHeader: tc.values})
			if !errors.Is(err, tc.kind) {
				t.Fatalf("DecodeBuildSecrets: %v, want %v", err, tc.kind)
			}
			if strings.Contains(err.Error(), "YQ==") || strings.Contains(err.Error(), "sss") {
				t.Errorf("error %q quotes a value", err)
			}
		})
	}
	if err := EncodeBuildSecrets(http.Header{}, map[string][]byte{"a": bytes.Repeat([]byte("s"), gantry.MaxBuildSecretBytes+1)}); !errors.Is(err, gantry.ErrTooLarge) {
		t.Errorf("EncodeBuildSecrets(over the bound): %v, want ErrTooLarge", err)
	}
	if err := EncodeBuildSecrets(http.Header{}, map[string][]byte{"a b": nil}); !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("EncodeBuildSecrets(bad id): %v, want ErrInvalid", err)
	}
}

// The build secrets reach the service in the request's context, from
// headers, not from the query string or the spec; a bad header is answered
// 400 before the service is called.
func TestSubmitCarriesBuildSecretsInHeaders(t *testing.T) {
	var got map[string][]byte
	called := false
	svc := &fakeService{submit: func(ctx context.Context, s gantry.Spec, _ map[string]string, _ io.Reader) (*gantry.Job, error) {
		called, got = true, gantry.BuildSecretsFrom(ctx)
		return &gantry.Job{ID: "0123456789abcdef", Spec: s}, nil
	}}
	base := serveHTTP(t, svc)
	var sent http.Header
	var query string
	c := serveClient(t, svc)
	tr := c.http.Transport
	c.http.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent, query = r.Header.Clone(), r.URL.RawQuery
		return tr.RoundTrip(r)
	})
	spec := gantry.Spec{Build: gantry.BuildSpec{Secrets: []string{"token"}}}
	ctx := gantry.WithBuildSecrets(context.Background(), map[string][]byte{"token": []byte("s3cr3t")})
	if _, err := c.Submit(ctx, spec, nil, strings.NewReader("tar")); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if string(got["token"]) != "s3cr3t" || len(got) != 1 {
		t.Errorf("the service got %d build secrets, want token", len(got))
	}
	if len(sent.Values(BuildSecretHeader)) != 1 || strings.Contains(query, "s3cr3t") || strings.Contains(query, base64.StdEncoding.EncodeToString([]byte("s3cr3t"))) {
		t.Errorf("sent %d %s headers, query %q; want the value in the header only", len(sent.Values(BuildSecretHeader)), BuildSecretHeader, query)
	}

	called = false
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/jobs?spec="+url.QueryEscape(`{}`), bytes.NewReader(nil))
	req.Header.Set(BuildSecretHeader, "token=not base64!")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || called || !strings.Contains(string(body), "base64") {
		t.Errorf("a bad header: status %d, service called %v, body %s; want 400 saying base64 and no call", resp.StatusCode, called, body)
	}
}
