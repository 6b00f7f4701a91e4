package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// fakeService is a Service whose methods do what the test sets; a method
// left nil answers an error that shows up as a 500.
type fakeService struct {
	submit func(ctx context.Context, spec gantry.Spec, secrets map[string]string, tar io.Reader) (*gantry.Job, error)
	get    func(ctx context.Context, id string) (*gantry.Job, error)
	list   func(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error)
	logs   func(ctx context.Context, id string, follow bool, w io.Writer) error
	cancel func(ctx context.Context, id string) (*gantry.Job, error)
	push   func(ctx context.Context, id string, refs []string, rep gantry.Reporter) (*gantry.Job, error)
	events func(ctx context.Context, after uint64, job string, follow bool, send func(*gantry.Event) error) error
	// outputs answers Outputs; writeOutputs WriteOutputs (outputs_test.go).
	outputs      func(ctx context.Context, id string) (*gantry.Outputs, error)
	writeOutputs func(ctx context.Context, id string, w io.Writer) error
	// metrics answers Metrics (metrics_test.go).
	metrics func(ctx context.Context, id, name string) (gantry.Series, error)
	nodes   func(ctx context.Context) (gantry.Cluster, error)
	// lastEvent is the newest event's number (0 when unset, not an error).
	lastEvent uint64
	policy    gantry.Policy

	fakeSweeps // sweeps_test.go
	fakePrune  // prune_test.go
}

func (f *fakeService) Policy() gantry.Policy { return f.policy }

func (f *fakeService) LastEvent(ctx context.Context) (uint64, error) { return f.lastEvent, nil }

func (f *fakeService) History(ctx context.Context, name, tag string) ([]gantry.HistoryEntry, error) {
	return nil, errUnexpected
}

func (f *fakeService) BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error {
	return errUnexpected
}

func (f *fakeService) Progress(ctx context.Context, id string, follow bool, w io.Writer) error {
	return errUnexpected
}

func (f *fakeService) Events(ctx context.Context, after uint64, job string, follow bool, send func(*gantry.Event) error) error {
	if f.events == nil {
		return errUnexpected
	}
	return f.events(ctx, after, job, follow, send)
}

func (f *fakeService) Cancel(ctx context.Context, id string) (*gantry.Job, error) {
	if f.cancel == nil {
		return nil, errUnexpected
	}
	return f.cancel(ctx, id)
}

func (f *fakeService) Push(ctx context.Context, id string, refs []string, rep gantry.Reporter) (*gantry.Job, error) {
	if f.push == nil {
		return nil, errUnexpected
	}
	return f.push(ctx, id, refs, rep)
}

var errUnexpected = errors.New("fake: unexpected call")

func (f *fakeService) Submit(ctx context.Context, spec gantry.Spec, secrets map[string]string, tar io.Reader) (*gantry.Job, error) {
	if f.submit == nil {
		return nil, errUnexpected
	}
	return f.submit(ctx, spec, secrets, tar)
}

func (f *fakeService) Get(ctx context.Context, id string) (*gantry.Job, error) {
	if f.get == nil {
		return nil, errUnexpected
	}
	return f.get(ctx, id)
}

func (f *fakeService) List(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error) {
	if f.list == nil {
		return nil, "", errUnexpected
	}
	return f.list(ctx, o)
}

func (f *fakeService) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	if f.logs == nil {
		return errUnexpected
	}
	return f.logs(ctx, id, follow, w)
}

var testVersion = VersionInfo{Version: "1.2.3", APIVersion: Version, Engine: "29.0.0", EngineAPI: "1.52"}

func handler(svc Service, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Handler(svc, func(context.Context) VersionInfo { return testVersion }, log)
}

// serveHTTP serves svc on a loopback port, for tests that look at the raw
// HTTP answers.
func serveHTTP(t *testing.T, svc Service) string {
	t.Helper()
	s := httptest.NewServer(handler(svc, nil))
	t.Cleanup(s.Close)
	return s.URL
}

// serveClient serves svc on a unix socket, as gantryd does, and returns a
// client of it.
func serveClient(t *testing.T, svc Service) *Client {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler(svc, nil)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := NewClient("unix://" + sock)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// shortTempDir is t.TempDir, unless its path is too long for a unix socket
// (108 bytes on Linux), as it is with a long test name or TMPDIR.
func shortTempDir(t *testing.T) string {
	t.Helper()
	if d := t.TempDir(); len(d) < 90 {
		return d
	}
	d, err := os.MkdirTemp("/tmp", "gantry")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// answer is an HTTP response as a test reads it.
type answer struct {
	status int
	ctype  string
	body   []byte
}

func do(t *testing.T, method, u string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return answer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: b}
}

// apiError decodes an error answer, failing the test when it is not the
// JSON error body every error has.
func (a answer) apiError(t *testing.T) Error {
	t.Helper()
	if a.ctype != "application/json" {
		t.Errorf("error answered with Content-Type %q, want application/json", a.ctype)
	}
	var e Error
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Message == "" {
		t.Fatalf("error body %q is not {\"message\": ..., \"kind\": ...}: %v", a.body, err)
	}
	return e
}

func ptr[T any](v T) *T { return &v }

func TestDecodeSpec(t *testing.T) {
	tests := []struct {
		name string
		json string
		want gantry.Spec
		kind error
		// say is what the message must hold so the user can find the fault.
		say string
	}{
		{
			name: "full",
			json: `{
				"build": {"dockerfile": "docker/train.Dockerfile", "build_args": {"EPOCHS": "3", "LR": "0.1"}, "target": "train"},
				"push": ["registry.example.com/iris:v1", "registry.example.com/iris:latest"],
				"min_accuracy": 0.9,
				"metric_regex": "acc=([0-9.]+)"
			}`,
			want: gantry.Spec{
				Build: gantry.BuildSpec{
					Dockerfile: "docker/train.Dockerfile",
					BuildArgs:  map[string]string{"EPOCHS": "3", "LR": "0.1"},
					Target:     "train",
				},
				Push:        []string{"registry.example.com/iris:v1", "registry.example.com/iris:latest"},
				MinAccuracy: ptr(0.9),
				MetricRegex: "acc=([0-9.]+)",
			},
		},
		{name: "empty object", json: `{}`},
		{name: "gate of zero is kept", json: `{"min_accuracy": 0}`, want: gantry.Spec{MinAccuracy: ptr(0.0)}},
		{name: "unknown field", json: `{"pushh": ["x"]}`, kind: gantry.ErrInvalid, say: `"pushh"`},
		{name: "unknown nested field", json: `{"build": {"dockerfle": "x"}}`, kind: gantry.ErrInvalid, say: `"dockerfle"`},
		{name: "string for a list", json: `{"push": "registry.example.com/iris"}`, kind: gantry.ErrInvalid, say: `"push"`},
		{name: "string for a number", json: `{"min_accuracy": "0.9"}`, kind: gantry.ErrInvalid, say: `"min_accuracy"`},
		{name: "number for a string", json: `{"build": {"dockerfile": 7}}`, kind: gantry.ErrInvalid, say: `"build.dockerfile"`},
		{name: "number in a map of strings", json: `{"build": {"build_args": {"EPOCHS": 3}}}`, kind: gantry.ErrInvalid, say: `build.build_args`},
		{name: "list for an object", json: `{"build": []}`, kind: gantry.ErrInvalid, say: `"build"`},
		{name: "not JSON", json: `push=x`, kind: gantry.ErrInvalid, say: "spec"},
		{name: "cut short", json: `{"push": [`, kind: gantry.ErrInvalid, say: "spec"},
		{name: "trailing object", json: `{} {"push": ["x"]}`, kind: gantry.ErrInvalid, say: "trailing"},
		{name: "too large", json: `{"metric_regex": "` + strings.Repeat("a", MaxSpecBytes) + `"}`, kind: gantry.ErrTooLarge, say: "bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeSpec([]byte(tc.json))
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("DecodeSpec: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("DecodeSpec = %+v\nwant %+v", got, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("DecodeSpec error %v is of kind %v, want %v", err, gantry.Kind(err), tc.kind)
			}
			if !strings.Contains(err.Error(), tc.say) {
				t.Errorf("DecodeSpec error %q does not say %s", err, tc.say)
			}
		})
	}
}

func TestDecodeSpecRefusesTrailingBrackets(t *testing.T) {
	for _, in := range []string{`{"push": ["x"]}]`, `{}}`} {
		if _, err := DecodeSpec([]byte(in)); !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("DecodeSpec(%s) error %v, want ErrInvalid", in, err)
		}
	}
}

// kindCases is each kind of error a service may return, and what a user of
// the API and of the client sees of it.
var kindCases = []struct {
	name   string
	err    error
	status int
	kind   error  // nil: none, the client gets a plain error
	say    string // the message as answered
}{
	{"not found", gantry.Errorf(gantry.ErrNotFound, "job 0123: no such job"), http.StatusNotFound, gantry.ErrNotFound, "job 0123: no such job"},
	{"invalid", gantry.Errorf(gantry.ErrInvalid, "dockerfile \"/x\": must be relative"), http.StatusBadRequest, gantry.ErrInvalid, "dockerfile \"/x\": must be relative"},
	{"conflict", gantry.Errorf(gantry.ErrConflict, "job 0123 already ended"), http.StatusConflict, gantry.ErrConflict, "job 0123 already ended"},
	{"too large", gantry.Errorf(gantry.ErrTooLarge, "build context over 512 MiB"), http.StatusRequestEntityTooLarge, gantry.ErrTooLarge, "build context over 512 MiB"},
	{"unavailable", gantry.Errorf(gantry.ErrUnavailable, "docker is not running"), http.StatusServiceUnavailable, gantry.ErrUnavailable, "docker is not running"},
	{"forbidden", gantry.Errorf(gantry.ErrForbidden, "capability SYS_ADMIN: not allowed"), http.StatusForbidden, gantry.ErrForbidden, "capability SYS_ADMIN: not allowed"},
	{"too many", gantry.Errorf(gantry.ErrTooMany, "the queue is full"), http.StatusTooManyRequests, gantry.ErrTooMany, "the queue is full"},
	{"wrapped kind", fmt.Errorf("get job: %w", gantry.ErrNotFound), http.StatusNotFound, gantry.ErrNotFound, "get job: not found"},
	{"no kind", errors.New("bolt: database not open"), http.StatusInternalServerError, nil, "internal error: bolt: database not open"},
	{"cancelled", context.Canceled, http.StatusInternalServerError, nil, "internal error: context canceled"},
}

func TestErrorKindsMapToStatus(t *testing.T) {
	for _, tc := range kindCases {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			svc := &fakeService{get: func(context.Context, string) (*gantry.Job, error) { return nil, tc.err }}
			s := httptest.NewServer(handler(svc, slog.New(slog.NewTextHandler(&logged, nil))))
			defer s.Close()
			a := do(t, http.MethodGet, s.URL+"/v1/jobs/0123", nil)
			if a.status != tc.status {
				t.Errorf("status %d, want %d", a.status, tc.status)
			}
			e := a.apiError(t)
			if e.Message != tc.say {
				t.Errorf("message %q, want %q", e.Message, tc.say)
			}
			if (e.Kind == "") != (tc.kind == nil) {
				t.Errorf("kind %q for an error of kind %v", e.Kind, tc.kind)
			}
			if internal := tc.status == http.StatusInternalServerError; internal != strings.Contains(logged.String(), tc.err.Error()) {
				t.Errorf("server log %q: want the error logged only for a 500 (this is a %d)", logged.String(), tc.status)
			}
		})
	}
}

func TestClientMapsErrorsBack(t *testing.T) {
	ctx := context.Background()
	for _, tc := range kindCases {
		t.Run(tc.name, func(t *testing.T) {
			svc := &fakeService{
				submit: func(context.Context, gantry.Spec, map[string]string, io.Reader) (*gantry.Job, error) {
					return nil, tc.err
				},
				get:  func(context.Context, string) (*gantry.Job, error) { return nil, tc.err },
				list: func(context.Context, gantry.JobFilter) ([]*gantry.Job, string, error) { return nil, "", tc.err },
			}
			c := serveClient(t, svc)
			calls := map[string]func() error{
				"Get": func() error { _, err := c.Get(ctx, "0123"); return err },
				"List": func() error {
					_, _, err := c.List(ctx, gantry.JobFilter{})
					return err
				},
				"Submit": func() error {
					_, err := c.Submit(ctx, gantry.Spec{}, nil, strings.NewReader("tar"))
					return err
				},
				"Logs": func() error { return c.Logs(ctx, "0123", false, io.Discard) },
			}
			for name, call := range calls {
				err := call()
				if err == nil {
					t.Errorf("%s: no error, want %q", name, tc.say)
					continue
				}
				if got := gantry.Kind(err); got != tc.kind {
					t.Errorf("%s: error %q is of kind %v, want %v", name, err, got, tc.kind)
				}
				if err.Error() != tc.say {
					t.Errorf("%s: error %q, want %q", name, err, tc.say)
				}
			}
		})
	}
}

func TestClientReportsANonJSONError(t *testing.T) {
	// A proxy, or a daemon too old or too new, may answer an error that is
	// not one of ours.
	sock := filepath.Join(shortTempDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	})}
	go srv.Serve(l)
	defer srv.Close()
	c, err := NewClient(sock) // a plain path works as well
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(context.Background(), "0123")
	if err == nil || !strings.Contains(err.Error(), "502 Bad Gateway") || !strings.Contains(err.Error(), "upstream down") {
		t.Errorf("error %v, want one saying the status and the body", err)
	}
}

func TestSubmitSendsSpecAndContextUnchanged(t *testing.T) {
	spec := gantry.Spec{
		Build:       gantry.BuildSpec{Dockerfile: "docker/train.Dockerfile", BuildArgs: map[string]string{"EPOCHS": "3", "Q": "a&b=c?d#e"}, Target: "train"},
		Push:        []string{"registry.example.com/iris:v1"},
		MinAccuracy: ptr(0.9),
		MetricRegex: `accuracy[:=]\s*([0-9.]+)`,
	}
	ctxBytes := make([]byte, 3<<20+17) // bigger than any buffer on the way
	r := rand.New(rand.NewPCG(1, 2))
	for i := range ctxBytes {
		ctxBytes[i] = byte(r.Uint32())
	}
	want := &gantry.Job{ID: "0123456789abcdef", Spec: spec, State: gantry.StateQueued, ContextSize: int64(len(ctxBytes))}

	var gotSpec gantry.Spec
	var gotBody []byte
	svc := &fakeService{submit: func(_ context.Context, s gantry.Spec, _ map[string]string, tar io.Reader) (*gantry.Job, error) {
		gotSpec = s
		b, err := io.ReadAll(tar)
		gotBody = b
		return want, err
	}}
	c := serveClient(t, svc)
	got, err := c.Submit(context.Background(), spec, nil, bytes.NewReader(ctxBytes))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if !reflect.DeepEqual(gotSpec, spec) {
		t.Errorf("service got spec %+v\nwant %+v", gotSpec, spec)
	}
	if !bytes.Equal(gotBody, ctxBytes) {
		t.Errorf("service got %d bytes of context, want the %d sent, unchanged", len(gotBody), len(ctxBytes))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Submit = %+v\nwant %+v", got, want)
	}
}

func TestSubmitAnswers201WithTheJob(t *testing.T) {
	svc := &fakeService{submit: func(_ context.Context, s gantry.Spec, _ map[string]string, tar io.Reader) (*gantry.Job, error) {
		return &gantry.Job{ID: "0123456789abcdef", Spec: s, State: gantry.StateQueued}, nil
	}}
	base := serveHTTP(t, svc)
	a := do(t, http.MethodPost, base+"/v1/jobs", strings.NewReader("tar"))
	if a.status != http.StatusCreated || a.ctype != "application/json" {
		t.Errorf("answered %d %s, want 201 application/json", a.status, a.ctype)
	}
	var j gantry.Job
	if err := json.Unmarshal(a.body, &j); err != nil || j.ID != "0123456789abcdef" || j.State != gantry.StateQueued {
		t.Errorf("body %s: want the job, queued (%v)", a.body, err)
	}
}

func TestSubmitRefusesABadSpecBeforeTheService(t *testing.T) {
	tests := []struct {
		name, spec string
		status     int
		say        string
	}{
		{"unknown field", `{"bulid":{}}`, http.StatusBadRequest, `"bulid"`},
		{"wrong type", `{"push":"x"}`, http.StatusBadRequest, `"push"`},
		{"not JSON", `push`, http.StatusBadRequest, "spec"},
		{"too large", `{"metric_regex":"` + strings.Repeat("a", MaxSpecBytes) + `"}`, http.StatusRequestEntityTooLarge, "spec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			svc := &fakeService{submit: func(context.Context, gantry.Spec, map[string]string, io.Reader) (*gantry.Job, error) {
				called = true
				return nil, errors.New("should not be called")
			}}
			base := serveHTTP(t, svc)
			q := "?spec=" + url.QueryEscape(tc.spec)
			a := do(t, http.MethodPost, base+"/v1/jobs"+q, strings.NewReader("tar"))
			if a.status != tc.status {
				t.Errorf("status %d, want %d", a.status, tc.status)
			}
			if e := a.apiError(t); !strings.Contains(e.Message, tc.say) {
				t.Errorf("message %q does not say %s", e.Message, tc.say)
			}
			if called {
				t.Errorf("the service was called with a spec that should have been refused")
			}
		})
	}
}

func TestListPassesOptions(t *testing.T) {
	jobs := []*gantry.Job{{ID: "0000000000000002", State: gantry.StateRunning}, {ID: "0000000000000001", State: gantry.StateFailed}}
	tests := []struct {
		name   string
		query  string
		want   *gantry.JobFilter // nil: refused before the service
		status int
		say    string
	}{
		{name: "none", query: "", want: &gantry.JobFilter{}},
		{name: "all", query: "?limit=5&before=0000000000000009&state=running&state=failed", want: &gantry.JobFilter{Limit: 5, Before: "0000000000000009", States: []gantry.State{gantry.StateRunning, gantry.StateFailed}}},
		{name: "zero limit", query: "?limit=0", want: &gantry.JobFilter{}},
		{name: "bad state", query: "?state=running&state=finished", status: http.StatusBadRequest, say: `state "finished"`},
		{name: "state in capitals", query: "?state=RUNNING", status: http.StatusBadRequest, say: `state "RUNNING"`},
		{name: "negative limit", query: "?limit=-1", status: http.StatusBadRequest, say: `limit "-1"`},
		{name: "limit not a number", query: "?limit=ten", status: http.StatusBadRequest, say: `limit "ten"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *gantry.JobFilter
			svc := &fakeService{list: func(_ context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error) {
				got = &o
				return jobs, "0000000000000001", nil
			}}
			base := serveHTTP(t, svc)
			a := do(t, http.MethodGet, base+"/v1/jobs"+tc.query, nil)
			if tc.want == nil {
				if a.status != tc.status {
					t.Errorf("status %d, want %d", a.status, tc.status)
				}
				if e := a.apiError(t); !strings.Contains(e.Message, tc.say) {
					t.Errorf("message %q does not say %s", e.Message, tc.say)
				}
				if got != nil {
					t.Errorf("the service was called with %+v; want the request refused before", *got)
				}
				return
			}
			if a.status != http.StatusOK {
				t.Fatalf("status %d (%s), want 200", a.status, a.body)
			}
			if got == nil || !reflect.DeepEqual(*got, *tc.want) {
				t.Errorf("service got %+v, want %+v", got, *tc.want)
			}
			var l JobList
			if err := json.Unmarshal(a.body, &l); err != nil {
				t.Fatal(err)
			}
			if len(l.Jobs) != 2 || l.Jobs[0].ID != jobs[0].ID || l.Next != "0000000000000001" {
				t.Errorf("answered %s, want the service's page and its next cursor", a.body)
			}
		})
	}
}

func TestListAnswersAnEmptyListNotNull(t *testing.T) {
	svc := &fakeService{list: func(context.Context, gantry.JobFilter) ([]*gantry.Job, string, error) { return nil, "", nil }}
	a := do(t, http.MethodGet, serveHTTP(t, svc)+"/v1/jobs", nil)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(a.body, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw["jobs"]) != "[]" {
		t.Errorf(`"jobs" is %s, want []`, raw["jobs"])
	}
	if _, ok := raw["next"]; ok {
		t.Errorf(`"next" is present on the last page: %s`, a.body)
	}
}

func TestClientList(t *testing.T) {
	jobs := []*gantry.Job{{ID: "0000000000000002", State: gantry.StateRunning}}
	var got []gantry.JobFilter
	svc := &fakeService{list: func(_ context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error) {
		got = append(got, o)
		return jobs, "0000000000000002", nil
	}}
	c := serveClient(t, svc)
	o := gantry.JobFilter{Limit: 7, Before: "0000000000000009", States: []gantry.State{gantry.StateQueued, gantry.StateRejected}}
	page, next, err := c.List(context.Background(), o)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if !reflect.DeepEqual(page, jobs) || next != "0000000000000002" {
		t.Errorf("List = %+v, %q; want %+v, %q", page, next, jobs, "0000000000000002")
	}
	_, _, err = c.List(context.Background(), gantry.JobFilter{States: []gantry.State{"done"}})
	if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), `"done"`) {
		t.Errorf("List with state done: error %v, want ErrInvalid naming it", err)
	}
	if want := []gantry.JobFilter{o}; !reflect.DeepEqual(got, want) {
		t.Errorf("service got %+v, want %+v (and no call for the bad state)", got, want)
	}
}

func TestLogsStreams(t *testing.T) {
	const id = "0123456789abcdef"
	firstRead := make(chan struct{})
	var gotFollow []bool
	var mu sync.Mutex
	svc := &fakeService{
		get: func(_ context.Context, got string) (*gantry.Job, error) {
			if got != id {
				return nil, gantry.Errorf(gantry.ErrNotFound, "job %s: no such job", got)
			}
			return &gantry.Job{ID: id}, nil
		},
		logs: func(ctx context.Context, _ string, follow bool, w io.Writer) error {
			mu.Lock()
			gotFollow = append(gotFollow, follow)
			mu.Unlock()
			io.WriteString(w, "#1 [1/3] FROM python\n")
			w.(interface{ Flush() }).Flush()
			if follow {
				// The job is still going: the client must already have
				// what was written.
				select {
				case <-firstRead:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			io.WriteString(w, "accuracy: 0.97\n")
			return nil
		},
	}
	c := serveClient(t, svc)

	pr, pw := io.Pipe()
	defer pr.Close() // so that a failed test does not leave Logs blocked
	done := make(chan error, 1)
	go func() {
		err := c.Logs(context.Background(), id, true, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	line := make([]byte, len("#1 [1/3] FROM python\n"))
	read := make(chan error, 1)
	go func() { _, err := io.ReadFull(pr, line); read <- err }()
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("reading the first line: %v", err)
		}
	case <-time.After(30 * time.Second):
		close(firstRead)
		t.Fatal("the first line did not reach the client while the job was running: logs are not streamed")
	}
	if string(line) != "#1 [1/3] FROM python\n" {
		t.Errorf("first line %q", line)
	}
	close(firstRead)
	rest, err := io.ReadAll(pr)
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	if string(rest) != "accuracy: 0.97\n" {
		t.Errorf("then %q, want %q", rest, "accuracy: 0.97\n")
	}
	if err := <-done; err != nil {
		t.Errorf("Logs: %v", err)
	}

	var buf bytes.Buffer
	if err := c.Logs(context.Background(), id, false, &buf); err != nil {
		t.Fatalf("Logs without follow: %v", err)
	}
	if want := "#1 [1/3] FROM python\naccuracy: 0.97\n"; buf.String() != want {
		t.Errorf("Logs without follow wrote %q, want %q", buf.String(), want)
	}
	mu.Lock()
	if want := []bool{true, false}; !reflect.DeepEqual(gotFollow, want) {
		t.Errorf("service got follow %v, want %v", gotFollow, want)
	}
	mu.Unlock()

	err = c.Logs(context.Background(), "nope", false, &buf)
	if !errors.Is(err, gantry.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Logs of an unknown job: error %v, want ErrNotFound naming it", err)
	}
}

func TestLogsAnswersText(t *testing.T) {
	svc := &fakeService{
		get: func(context.Context, string) (*gantry.Job, error) { return &gantry.Job{}, nil },
		logs: func(_ context.Context, _ string, _ bool, w io.Writer) error {
			_, err := io.WriteString(w, "<html>not html</html>\n")
			return err
		},
	}
	a := do(t, http.MethodGet, serveHTTP(t, svc)+"/v1/jobs/0123/logs", nil)
	if a.status != http.StatusOK || a.ctype != "text/plain; charset=utf-8" {
		t.Errorf("answered %d %q, want 200 text/plain; charset=utf-8", a.status, a.ctype)
	}
	if string(a.body) != "<html>not html</html>\n" {
		t.Errorf("body %q", a.body)
	}
}

func TestGetPassesTheIDUnchanged(t *testing.T) {
	for _, id := range []string{"0123456789abcdef", "a b", "a/b", "a%2Fb", "ü"} {
		var got string
		svc := &fakeService{get: func(_ context.Context, id string) (*gantry.Job, error) {
			got = id
			return &gantry.Job{ID: id}, nil
		}}
		c := serveClient(t, svc)
		j, err := c.Get(context.Background(), id)
		if err != nil {
			t.Errorf("Get(%q): %v", id, err)
			continue
		}
		if got != id || j.ID != id {
			t.Errorf("Get(%q): service got %q, client got job %q", id, got, j.ID)
		}
	}
}

func TestUnknownPathsAnswer404JSON(t *testing.T) {
	base := serveHTTP(t, &fakeService{})
	tests := []struct{ method, path string }{
		{http.MethodGet, "/"},
		{http.MethodGet, "/v2/jobs"},
		{http.MethodGet, "/v1/job"},
		{http.MethodGet, "/v1/jobs/0123/log"},
		{http.MethodGet, "/v1/jobs/0123/logs/more"},
		{http.MethodDelete, "/v1/jobs/0123"},
		{http.MethodPut, "/v1/jobs"},
	}
	for _, tc := range tests {
		a := do(t, tc.method, base+tc.path, nil)
		if a.status != http.StatusNotFound {
			t.Errorf("%s %s: status %d, want 404", tc.method, tc.path, a.status)
		}
		e := a.apiError(t)
		if e.Kind != "not_found" || !strings.Contains(e.Message, tc.method+" "+tc.path) {
			t.Errorf("%s %s: answered %+v, want kind not_found and a message naming the request", tc.method, tc.path, e)
		}
	}
}

func TestPingAndVersion(t *testing.T) {
	base := serveHTTP(t, &fakeService{})
	if a := do(t, http.MethodGet, base+"/_ping", nil); a.status != http.StatusOK || string(a.body) != "OK" {
		t.Errorf("/_ping answered %d %q, want 200 OK", a.status, a.body)
	}
	c := serveClient(t, &fakeService{})
	v, err := c.Version(context.Background())
	if err != nil || v != testVersion {
		t.Errorf("Version = %+v, %v; want %+v", v, err, testVersion)
	}
}

func TestNewClientRefusesOtherSchemes(t *testing.T) {
	for _, host := range []string{"http://localhost", "ssh://me@host"} {
		c, err := NewClient(host)
		if !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("NewClient(%q) = %v, %v; want ErrInvalid", host, c, err)
			continue
		}
		if !strings.Contains(err.Error(), host) || !strings.Contains(err.Error(), "unix://") || !strings.Contains(err.Error(), "tcp://") {
			t.Errorf("NewClient(%q) error %q: want it to name the host and say what is supported", host, err)
		}
	}
	// TCP is mutual TLS only: without the files, refused, saying which.
	for _, host := range []string{"tcp://x", "tcp://127.0.0.1:2375"} {
		c, err := NewClient(host)
		if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), "--tlscert") {
			t.Errorf("NewClient(%q) without TLS = %v, %v; want ErrInvalid naming --tlscert", host, c, err)
		}
	}
}

func TestNewClientDefaults(t *testing.T) {
	t.Setenv("GANTRY_HOST", "unix:///from/env.sock")
	if c, err := NewClient(""); err != nil || c.socket != "/from/env.sock" {
		t.Errorf("NewClient(\"\") with GANTRY_HOST: socket %v, %v; want /from/env.sock", c, err)
	}
	t.Setenv("GANTRY_HOST", "")
	if c, err := NewClient(""); err != nil || c.socket != DefaultSocket() {
		t.Errorf("NewClient(\"\"): %v, %v; want the default socket %s", c, err, DefaultSocket())
	}
}

func TestClientWithNobodyListening(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "gantry.sock")
	c, err := NewClient("unix://" + sock)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	_, err = c.Get(context.Background(), "0123")
	if !errors.Is(err, gantry.ErrUnavailable) {
		t.Fatalf("Get: error %v is of kind %v, want ErrUnavailable", err, gantry.Kind(err))
	}
	for _, want := range []string{sock, "gantryd running", "GANTRY_HOST"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Get(ctx, "0123"); !errors.Is(err, context.Canceled) || errors.Is(err, gantry.ErrUnavailable) {
		t.Errorf("Get with a cancelled context: error %v, want context.Canceled, not ErrUnavailable", err)
	}
}

// A push asked with progress streams its lines and typed progress, then
// its outcome; an error before any progress keeps its status code.
func TestPushProgress(t *testing.T) {
	ctx := context.Background()
	done := &gantry.Job{ID: "06h0000000000000", State: gantry.StateSucceeded}
	tests := []struct {
		name      string
		push      func(ctx context.Context, id string, refs []string, rep gantry.Reporter) (*gantry.Job, error)
		wantLines string
		wantKind  error
		wantMsg   string
	}{
		{
			name: "progress, then the record",
			push: func(_ context.Context, _ string, _ []string, rep gantry.Reporter) (*gantry.Job, error) {
				rep.Progress(gantry.Progress{Ref: "r", Current: 1024, Total: 2048})
				rep.Progress(gantry.Progress{Ref: "r", Current: 2048, Total: 2048, Digest: "sha256:1"})
				rep.Linef("pushed %s@%s", "r", "sha256:1")
				return done, nil
			},
			wantLines: "progress r 1024/2048 \nprogress r 2048/2048 sha256:1\nline pushed r@sha256:1\n",
		},
		{
			name: "a line, then an error of a kind",
			push: func(_ context.Context, _ string, _ []string, rep gantry.Reporter) (*gantry.Job, error) {
				rep.Linef("push to r failed: 503; retrying in 1s")
				return done, gantry.Errorf(gantry.ErrUnavailable, "push timed out after 4s")
			},
			wantLines: "line push to r failed: 503; retrying in 1s\n",
			wantKind:  gantry.ErrUnavailable, wantMsg: "push timed out after 4s",
		},
		{
			name: "an error before any progress",
			push: func(context.Context, string, []string, gantry.Reporter) (*gantry.Job, error) {
				return nil, gantry.Errorf(gantry.ErrConflict, "job is running")
			},
			wantKind: gantry.ErrConflict, wantMsg: "job is running",
		},
		{
			name: "no progress, the record",
			push: func(context.Context, string, []string, gantry.Reporter) (*gantry.Job, error) {
				return done, nil
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := serveClient(t, &fakeService{push: tc.push})
			var lines bytes.Buffer
			j, err := c.PushProgress(ctx, done.ID, []string{"r"}, textReporter{&lines})
			if lines.String() != tc.wantLines {
				t.Errorf("progress %q, want %q", lines.String(), tc.wantLines)
			}
			if tc.wantKind != nil {
				if !errors.Is(err, tc.wantKind) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("err %v, want %v with %q", err, tc.wantKind, tc.wantMsg)
				}
				return
			}
			if err != nil || j == nil || j.ID != done.ID || j.State != done.State {
				t.Fatalf("PushProgress = %+v, %v; want the record", j, err)
			}
		})
	}
}

// textReporter writes what it is handed as lines: "line TEXT" and
// "progress REF CURRENT/TOTAL DIGEST".
type textReporter struct{ w io.Writer }

func (r textReporter) Linef(format string, args ...any) {
	fmt.Fprintf(r.w, "line "+format+"\n", args...)
}

func (r textReporter) Progress(p gantry.Progress) {
	fmt.Fprintf(r.w, "progress %s %d/%d %s\n", p.Ref, p.Current, p.Total, p.Digest)
}

// A page of jobs carries the newest event's number, read before the page.
func TestListCarriesTheEventNumber(t *testing.T) {
	svc := &fakeService{lastEvent: 41}
	svc.list = func(context.Context, gantry.JobFilter) ([]*gantry.Job, string, error) {
		svc.lastEvent = 42 // a change while the page is read
		return nil, "", nil
	}
	a := do(t, http.MethodGet, serveHTTP(t, svc)+"/v1/jobs", nil)
	var l JobList
	if err := json.Unmarshal(a.body, &l); err != nil {
		t.Fatal(err)
	}
	if l.EventSeq != 41 {
		t.Errorf("event_seq %d, want 41: the number read before the page, so no change is missed", l.EventSeq)
	}
}
