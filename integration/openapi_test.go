package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/content"
	verrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

// contract makes requests to one gantryd over its socket and checks each
// request and its response against the OpenAPI document the daemon serves,
// which must be the repository's.
type contract struct {
	t     *testing.T
	d     *gantryd
	http  *http.Client
	check validator.Validator
}

func newContract(t *testing.T, d *gantryd) *contract {
	t.Helper()
	c := &contract{t: t, d: d, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		}}}}
	served := c.send(unchecked, http.MethodGet, "/v1/openapi.json", nil, nil, http.StatusOK)
	if !bytes.Equal(served, api.OpenAPI) {
		t.Fatalf("GET /v1/openapi.json: %d bytes, not the %d of api/openapi.json", len(served), len(api.OpenAPI))
	}
	doc, err := libopenapi.NewDocument(served)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc,
		config.WithContentParameterValidation(),
		config.WithStandardBodyDecoders(),
		config.WithBodyDecoder("application/x-tar", content.BinaryDecoder()),
		config.WithBodyDecoder("application/x-ndjson", content.DecoderFunc(decodeLines)),
		config.WithBodyDecoder("text/event-stream", content.DecoderFunc(decodeEvents)),
		config.WithRejectUnsupportedBodyContent())
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	c.check = v
	c.canaries()
	return c
}

// canaries are answers gantryd must not give, which the checker must
// refuse: a check that passes everything would prove nothing.
func (c *contract) canaries() {
	c.t.Helper()
	for _, tc := range []struct{ path, ctype, body string }{
		{"/v1/jobs/x", "application/json", `{"id": "x", "surprise": 1}`},
		{"/v1/events", "text/event-stream", "id: 1\nevent: state\ndata: {\"time\": \"now\"}\n\n"},
		{"/v1/jobs/x/progress", "application/x-ndjson", `{"ref": 7}` + "\n"},
		{"/v1/jobs/x", "application/json", `{"message": "no", "kind": "sad"}`},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://gantry"+tc.path, nil)
		status := http.StatusOK
		if strings.Contains(tc.body, "message") {
			status = http.StatusNotFound
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {tc.ctype}},
			Body: io.NopCloser(strings.NewReader(tc.body)), Request: req}
		if ok, _ := c.check.ValidateHttpResponse(req, resp); ok {
			c.t.Errorf("the checker passes GET %s answering %s %q; want it refused", tc.path, tc.ctype, tc.body)
		}
	}
}

// How do checks a request and its response.
type checkMode int

const (
	valid     checkMode = iota // both match the document
	refused                    // the document refuses the request; the response matches
	unchecked                  // neither is checked (the checker is not built yet)
)

// do sends a request (body nil for none) and returns the response's body,
// failing the test unless the status is want and both request and response
// are what the document says.
func (c *contract) do(method, path string, header http.Header, body []byte, want int) []byte {
	c.t.Helper()
	return c.send(valid, method, path, header, body, want)
}

// send is do, checking as mode says.
func (c *contract) send(mode checkMode, method, path string, header http.Header, body []byte, want int) []byte {
	c.t.Helper()
	req := func() *http.Request {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://gantry"+path, r)
		if err != nil {
			c.t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		return req
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := c.http.Do(req().WithContext(ctx))
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatalf("%s %s: read the body: %v", method, path, err)
	}
	if resp.StatusCode != want {
		c.t.Errorf("%s %s: %d %s; want %d", method, path, resp.StatusCode, got, want)
	}
	if mode == unchecked {
		return got
	}
	switch ok, errs := c.check.ValidateHttpRequest(req()); {
	case mode == valid && !ok:
		c.report("request", method, path, errs)
	case mode == refused && ok:
		c.t.Errorf("%s %s: openapi.json accepts the request; want it refused, as gantryd refuses it", method, path)
	}
	resp.Body = io.NopCloser(bytes.NewReader(got))
	if ok, errs := c.check.ValidateHttpResponse(req(), resp); !ok {
		c.report(fmt.Sprintf("response %d %s", resp.StatusCode, resp.Header.Get("Content-Type")), method, path, errs)
	}
	return got
}

func (c *contract) report(what, method, path string, errs []*verrors.ValidationError) {
	c.t.Helper()
	for _, e := range errs {
		c.t.Errorf("%s %s: %s does not match openapi.json: %s: %s", method, path, what, e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			c.t.Errorf("    at %s (%s): %s", se.FieldPath, se.KeywordLocation, se.Reason)
		}
	}
}

// getJSON is do for a JSON answer, decoded into v.
func (c *contract) getJSON(path string, want int, v any) {
	c.t.Helper()
	if err := json.Unmarshal(c.do(http.MethodGet, path, nil, nil, want), v); err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
}

// decodeLines reads JSON lines as the list of their values.
func decodeLines(in *content.DecodeInput) (any, error) {
	dec := json.NewDecoder(in.Body)
	dec.UseNumber()
	out := []any{}
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// decodeEvents reads a server-sent event stream as the list of its events
// ({"id", "event", "data"}, data decoded as JSON), comments left out.
func decodeEvents(in *content.DecodeInput) (any, error) {
	out := []any{}
	ev := map[string]any{}
	sc := bufio.NewScanner(in.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(ev) > 0 {
				out = append(out, ev)
				ev = map[string]any{}
			}
		case strings.HasPrefix(line, ":"):
		default:
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			if k == "data" {
				dec := json.NewDecoder(strings.NewReader(v))
				dec.UseNumber()
				var data any
				if err := dec.Decode(&data); err != nil {
					return nil, fmt.Errorf("event data %q: %w", v, err)
				}
				ev[k] = data
				continue
			}
			ev[k] = v
		}
	}
	if len(ev) > 0 {
		return nil, fmt.Errorf("the stream ends inside an event: %v", ev)
	}
	return out, sc.Err()
}

// submission is the query and headers of a submit with spec and secrets.
func submission(t *testing.T, spec any, secrets map[string]string) (string, http.Header) {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Content-Type": {"application/x-tar"}}
	if secrets != nil {
		enc, err := api.EncodeSecrets(secrets)
		if err != nil {
			t.Fatal(err)
		}
		h.Set(api.SecretEnvHeader, enc)
	}
	return "?spec=" + url.QueryEscape(string(data)), h
}

// contractTrainer reports its accuracy, a loss series, and leaves a model
// file in its output directory; with SLEEP set it first waits that long.
const contractTrainer = `import os, time
time.sleep(float(os.environ.get("SLEEP", "0")))
for step in range(3):
    print("loss: %.2f" % (1.0 - step * 0.3), flush=True)
os.makedirs("/output", exist_ok=True)
open("/output/model.txt", "w").write("weights")
print("Model accuracy: 0.93", flush=True)
`

// Real requests to a real gantryd and its responses match the OpenAPI
// document, route by route, errors included: the document cannot drift
// from what the daemon does.
func TestOpenAPIContract(t *testing.T) {
	d := startDaemon(t)
	c := newContract(t, d)
	c.do(http.MethodGet, "/_ping", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/version", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/info", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/nodes", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/jobs", nil, nil, http.StatusOK)

	var b bytes.Buffer
	tarDir(t, trainerDir(t, contractTrainer), &b)
	ctx := b.Bytes()
	ref := uniqueRef(t)
	repo, tag, _ := strings.Cut(ref[len(registry):], ":")
	repo = registry + repo
	spec := gantry.Spec{Push: []string{ref}, Metrics: []gantry.MetricPattern{{Name: "loss", Regex: `loss: ([0-9.]+)`}},
		Run: gantry.RunSpec{SecretEnv: []string{"TOKEN"}}}
	q, h := submission(t, spec, map[string]string{"TOKEN": "s3cret"})
	var j gantry.Job
	if err := json.Unmarshal(c.do(http.MethodPost, "/v1/jobs"+q, h, ctx, http.StatusCreated), &j); err != nil {
		t.Fatal(err)
	}
	removeJobImage(t, j.ID)
	// The job's events end after its terminal state: the wait.
	evs := c.do(http.MethodGet, "/v1/events?job="+j.ID, nil, nil, http.StatusOK)
	if !bytes.Contains(evs, []byte(`"state":"succeeded"`)) {
		t.Fatalf("events of job %s: %s; want it to succeed", j.ID, evs)
	}
	c.do(http.MethodGet, "/v1/events?since=0&follow=0", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/events?follow=false", http.Header{"Last-Event-ID": {"1"}}, nil, http.StatusOK)
	c.getJSON("/v1/jobs/"+j.ID, http.StatusOK, &j)
	if j.State != gantry.StateSucceeded || len(j.Pushes) == 0 {
		t.Fatalf("job %s: %s (%s), %d pushes; want succeeded and pushed", j.ID, j.State, j.Error, len(j.Pushes))
	}
	for _, p := range []string{"/v1/jobs?limit=5&state=succeeded&state=failed", "/v1/jobs?limit=1&before=" + j.ID,
		"/v1/jobs/" + j.ID + "/logs", "/v1/jobs/" + j.ID + "/logs?follow=1", "/v1/jobs/" + j.ID + "/build",
		"/v1/jobs/" + j.ID + "/progress?follow=true", "/v1/jobs/" + j.ID + "/outputs", "/v1/jobs/" + j.ID + "/metrics",
		"/v1/jobs/" + j.ID + "/metrics?name=loss", "/v1/history?name=" + url.QueryEscape(repo) + "&tag=" + tag} {
		c.do(http.MethodGet, p, nil, nil, http.StatusOK)
	}
	jsonBody := http.Header{"Content-Type": {"application/json"}}
	c.do(http.MethodPost, "/v1/jobs/"+j.ID+"/push", jsonBody, []byte(`{"to": ["`+ref+`-again"]}`), http.StatusOK)
	c.do(http.MethodPost, "/v1/jobs/"+j.ID+"/push?progress=1", jsonBody, []byte(`{}`), http.StatusOK)
	c.do(http.MethodPost, "/v1/prune", jsonBody, []byte(`{"dry_run": true, "keep": 0, "older_than": "0s"}`), http.StatusOK)
	// Ended other than canceled: nothing to cancel.
	c.do(http.MethodPost, "/v1/jobs/"+j.ID+"/cancel", nil, nil, http.StatusConflict)

	contractCancel(t, c, ctx)
	contractSweep(t, c, ctx)
	contractErrors(t, c, ctx)
}

// A running job's cancel answers 202.
func contractCancel(t *testing.T, c *contract, ctx []byte) {
	t.Helper()
	q, h := submission(t, gantry.Spec{Run: gantry.RunSpec{Env: []string{"SLEEP=600"}}}, nil)
	var j gantry.Job
	if err := json.Unmarshal(c.do(http.MethodPost, "/v1/jobs"+q, h, ctx, http.StatusCreated), &j); err != nil {
		t.Fatal(err)
	}
	removeJobImage(t, j.ID)
	// Running, it stops once its container does: 202 until then. (The
	// record is the one state to watch: its events stream on to the end.)
	deadline := time.Now().Add(5 * time.Minute)
	for j.State != gantry.StateRunning {
		if j.State.Terminal() || time.Now().After(deadline) {
			t.Fatalf("job %s: %s (%s); want it running", j.ID, j.State, j.Error)
		}
		time.Sleep(200 * time.Millisecond)
		c.getJSON("/v1/jobs/"+j.ID, http.StatusOK, &j)
	}
	c.do(http.MethodPost, "/v1/jobs/"+j.ID+"/cancel", nil, nil, http.StatusAccepted)
	c.do(http.MethodGet, "/v1/events?job="+j.ID, nil, nil, http.StatusOK)
}

// A two-point sweep, listed, shown and canceled.
func contractSweep(t *testing.T, c *contract, ctx []byte) {
	t.Helper()
	spec := gantry.SweepSpec{Job: gantry.Spec{}, Params: []gantry.Param{{Name: "SLEEP", Values: []string{"600", "601"}}}}
	q, h := submission(t, spec, nil)
	var sw gantry.Sweep
	if err := json.Unmarshal(c.do(http.MethodPost, "/v1/sweeps"+q, h, ctx, http.StatusCreated), &sw); err != nil {
		t.Fatal(err)
	}
	removeSweepImage(t, sw.ID)
	c.do(http.MethodGet, "/v1/sweeps", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/sweeps?limit=1", nil, nil, http.StatusOK)
	c.do(http.MethodGet, "/v1/sweeps/"+sw.ID, nil, nil, http.StatusOK)
	c.do(http.MethodPost, "/v1/sweeps/"+sw.ID+"/cancel", nil, nil, http.StatusOK)
	for _, id := range sw.Jobs {
		removeJobImage(t, id)
		c.do(http.MethodGet, "/v1/events?job="+id, nil, nil, http.StatusOK)
	}
	c.do(http.MethodGet, "/v1/sweeps/"+sw.ID, nil, nil, http.StatusOK)
}

// Errors answer the Error body with their kind's status.
func contractErrors(t *testing.T, c *contract, ctx []byte) {
	t.Helper()
	c.do(http.MethodGet, "/v1/jobs/no-such-job", nil, nil, http.StatusNotFound)
	c.do(http.MethodGet, "/v1/jobs/no-such-job/logs", nil, nil, http.StatusNotFound)
	c.do(http.MethodGet, "/v1/sweeps/no-such-sweep", nil, nil, http.StatusNotFound)
	c.do(http.MethodGet, "/v1/openapi.json", nil, nil, http.StatusOK)
	c.send(refused, http.MethodGet, "/v1/history", nil, nil, http.StatusBadRequest)
	c.send(refused, http.MethodGet, "/v1/jobs?limit=-1", nil, nil, http.StatusBadRequest)
	c.send(refused, http.MethodGet, "/v1/jobs?state=sleeping", nil, nil, http.StatusBadRequest)
	h := http.Header{"Content-Type": {"application/x-tar"}}
	c.send(refused, http.MethodPost, "/v1/jobs?spec="+url.QueryEscape(`{"timeouts": {"build": "soon"}}`), h, ctx, http.StatusBadRequest)
	c.send(refused, http.MethodPost, "/v1/jobs?spec="+url.QueryEscape(`{"bogus": 1}`), h, ctx, http.StatusBadRequest)
	q, h := submission(t, gantry.Spec{Run: gantry.RunSpec{GPUs: "all"}}, nil)
	c.do(http.MethodPost, "/v1/jobs"+q, h, ctx, http.StatusForbidden)
}
