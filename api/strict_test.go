package api

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// A key is read only as the field's exact JSON name, and only once: a
// filtering proxy that looks for "push" sees every push.
func TestDecodeSpecKeysExactlyOnce(t *testing.T) {
	tests := []struct {
		name string
		json string
		say  string // what the message must name
	}{
		{"upper case", `{"PUSH": ["127.0.0.1:5000/a"]}`, `"PUSH"`},
		{"mixed case", `{"Min_Accuracy": 0.5}`, `did you mean "min_accuracy"`},
		{"nested case", `{"build": {"Dockerfile": "x"}}`, `"Dockerfile" in "build"`},
		{"unicode fold", `{"ſandbox": {}}`, `"ſandbox"`},
		{"duplicate", `{"push": ["127.0.0.1:5000/a"], "push": ["127.0.0.1:5000/b"]}`, `duplicate key "push"`},
		{"duplicate escaped", `{"push": [], "\u0070ush": ["127.0.0.1:5000/b"]}`, `duplicate key "push"`},
		{"duplicate nested struct", `{"timeouts": {"build": "1m", "build": "2h"}}`, `duplicate key "build" in "timeouts"`},
		{"duplicate map key", `{"build": {"build_args": {"A": "1", "A": "2"}}}`, `duplicate key "A" in "build.build_args"`},
		{"duplicate inside a wrong type", `{"push": [{"a": 1, "a": 2}]}`, `duplicate key "a"`},
		{"duplicate in an opaque value", `{"timeouts": {"train": {"x": 1, "x": 1}}}`, `duplicate key "x"`},
		{"duplicate after an error-free prefix", `{"metric_regex": "a", "promote": "b", "metric_regex": "c"}`, `"metric_regex"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeSpec([]byte(tc.json))
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Fatalf("DecodeSpec(%s) = %+v, %v; want ErrInvalid", tc.json, got, err)
			}
			if !strings.Contains(err.Error(), tc.say) {
				t.Errorf("DecodeSpec(%s) error %q does not say %s", tc.json, err, tc.say)
			}
		})
	}
}

// What the exact names allow still decodes, whatever the nesting.
func TestDecodeSpecExactKeysStillDecode(t *testing.T) {
	in := `{"build": {"build_args": {"a": "1", "A": "2"}}, "sandbox": {"network": "n"}, "timeouts": {"build": "1m"}}`
	got, err := DecodeSpec([]byte(in))
	if err != nil {
		t.Fatalf("DecodeSpec(%s): %v", in, err)
	}
	want := gantry.Spec{
		Build:    gantry.BuildSpec{BuildArgs: map[string]string{"a": "1", "A": "2"}},
		Sandbox:  gantry.Sandbox{Network: "n"},
		Timeouts: gantry.Timeouts{Build: gantry.Duration(60e9)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeSpec = %+v\nwant %+v", got, want)
	}
}

// The push request's body is read as strictly as a spec.
func TestPushRequestKeysExactlyOnce(t *testing.T) {
	tests := []struct {
		body   string
		status int
		say    string
	}{
		{`{"TO": ["127.0.0.1:5000/a"]}`, http.StatusBadRequest, `"TO"`},
		{`{"to": ["127.0.0.1:5000/a"], "to": ["127.0.0.1:5000/b"]}`, http.StatusBadRequest, `duplicate key "to"`},
		{`{"to": "127.0.0.1:5000/a"}`, http.StatusBadRequest, `"to"`},
		{`{"to": []} {}`, http.StatusBadRequest, "trailing"},
		{`{"to": ["127.0.0.1:5000/a"]}`, http.StatusOK, ""},
		{``, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.body, func(t *testing.T) {
			var pushed []string
			svc := &fakeService{push: func(_ context.Context, id string, refs []string, _ gantry.Reporter) (*gantry.Job, error) {
				pushed = refs
				return &gantry.Job{ID: id, State: gantry.StateSucceeded}, nil
			}}
			a := do(t, http.MethodPost, serveHTTP(t, svc)+"/v1/jobs/06h0000000000000/push", strings.NewReader(tc.body))
			if a.status != tc.status {
				t.Fatalf("push with %s: status %d, want %d (%s)", tc.body, a.status, tc.status, a.body)
			}
			if tc.status != http.StatusOK {
				if e := a.apiError(t); !strings.Contains(e.Message, tc.say) {
					t.Errorf("push with %s: message %q does not say %s", tc.body, e.Message, tc.say)
				}
				if pushed != nil {
					t.Errorf("push with %s reached the service with %q", tc.body, pushed)
				}
			}
		})
	}
}
