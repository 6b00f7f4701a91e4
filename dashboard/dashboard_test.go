package dashboard

import (
	"bufio"
	"encoding/base64"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeAPI records the requests that reach it and answers with the path.
type fakeAPI struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"api":"`+r.Method+" "+r.URL.RequestURI()+`"}`)
}

func (f *fakeAPI) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

var testCred = &Credentials{User: "ops", Password: "s3cret-dashboard-pw"}

func do(h http.Handler, method, path string, cred *Credentials, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	if cred != nil {
		r.SetBasicAuth(cred.User, cred.Password)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestStaticAssets(t *testing.T) {
	for _, c := range []struct {
		cred *Credentials
		mode string
	}{{nil, `data-mode="read-only"`}, {testCred, `data-mode="cancel"`}} {
		h := Handler(&fakeAPI{}, nil, c.cred)
		for _, tc := range []struct {
			path, ctype, holds string
		}{
			{"/", "text/html", c.mode},
			{"/", "text/html", `<script src="app.js"`},
			{"/app.js", "text/javascript", "new EventSource('v1/events'"},
			{"/", "text/html", `<script src="curves.js"`},
			{"/", "text/html", `<script src="sweeps.js"`},
			{"/curves.js", "text/javascript", "'/metrics'"},
			{"/sweeps.js", "text/javascript", "getJSON('v1/sweeps')"},
			{"/style.css", "text/css", ".pt-succeeded"},
			{"/favicon.svg", "image/svg+xml", "<svg"},
		} {
			w := do(h, "GET", tc.path, c.cred)
			if w.Code != http.StatusOK {
				t.Fatalf("GET %s: %d, want 200", tc.path, w.Code)
			}
			if got := w.Header().Get("Content-Type"); !strings.HasPrefix(got, tc.ctype) {
				t.Errorf("GET %s: Content-Type %q, want %s", tc.path, got, tc.ctype)
			}
			body := w.Body.String()
			if !strings.Contains(body, tc.holds) {
				t.Errorf("GET %s does not hold %q", tc.path, tc.holds)
			}
			// Nothing is loaded from elsewhere: no CDN, no build step.
			if rest := strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""); strings.Contains(rest, "http://") || strings.Contains(rest, "https://") || strings.Contains(rest, "//cdn") {
				t.Errorf("GET %s refers to another origin", tc.path)
			}
		}
		if w := do(h, "GET", "/nope.js", c.cred); w.Code != http.StatusNotFound {
			t.Errorf("GET /nope.js: %d, want 404", w.Code)
		}
	}
}

// The page's code never turns what it shows into markup: a job's output, its
// parameters and its metrics' names are user data, shown as text nodes and
// attribute values (see make in app.js).
func TestScriptsMakeNoMarkup(t *testing.T) {
	files, err := fs.Glob(static, "static/*.js")
	if err != nil || len(files) < 3 {
		t.Fatalf("the page's scripts: %v, %v", files, err)
	}
	for _, name := range files {
		b, err := fs.ReadFile(static, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "createContextualFragment", "DOMParser"} {
			if strings.Contains(string(b), sink) {
				t.Errorf("%s uses %s: build elements with el() and svg(), with data as text", name, sink)
			}
		}
	}
}

// Everything that would change something is refused, whatever the path:
// the API's writes are not reachable through a read-only dashboard.
func TestReadOnlyRefusesWrites(t *testing.T) {
	api := &fakeAPI{}
	h := Handler(api, nil, nil)
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v1/jobs"},
		{"POST", "/v1/jobs/06h17gxw9sr0xqcw/cancel"},
		{"POST", "/v1/jobs/06h17gxw9sr0xqcw/push"},
		{"DELETE", "/v1/jobs/06h17gxw9sr0xqcw"},
		{"PUT", "/v1/jobs/06h17gxw9sr0xqcw"},
		{"PATCH", "/"},
		{"POST", "/"},
		{"POST", "/app.js"},
		{"OPTIONS", "/v1/jobs"},
	} {
		w := do(h, tc.method, tc.path, nil)
		if w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", tc.method, tc.path, w.Code)
		}
		if got := w.Header().Get("Allow"); got != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want GET, HEAD", tc.method, tc.path, got)
		}
	}
	if reqs := api.requests(); len(reqs) != 0 {
		t.Errorf("the API saw %d requests, want none: first %s %s", len(reqs), reqs[0].Method, reqs[0].URL)
	}
}

func TestForwardsReads(t *testing.T) {
	api := &fakeAPI{}
	h := Handler(api, nil, nil)
	for _, path := range []string{
		"/_ping",
		"/v1/version",
		"/v1/jobs?limit=10&before=06h17gxw9sr0xqcw&state=running",
		"/v1/jobs/06h17gxw9sr0xqcw",
		"/v1/jobs/06h17gxw9sr0xqcw/logs?follow=1",
		"/v1/events?since=7",
	} {
		w := do(h, "GET", path, nil)
		if want := `{"api":"GET ` + path + `"}`; w.Code != http.StatusOK || w.Body.String() != want {
			t.Errorf("GET %s: %d %s, want 200 %s", path, w.Code, w.Body, want)
		}
	}
	if got := len(api.requests()); got != 6 {
		t.Errorf("the API saw %d requests, want 6", got)
	}
}

// The API's streams (events, a followed log) reach the browser as they are
// written, not when they end.
func TestStreamsFlush(t *testing.T) {
	release := make(chan struct{})
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "id: 1\nevent: state\ndata: {}\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush through the dashboard: %v", err)
		}
		<-release
	})
	srv := httptest.NewServer(Handler(api, nil, nil))
	defer srv.Close()
	defer close(release)
	resp, err := http.Get(srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "id: 1\n" {
		t.Fatalf("first line of the stream %q, %v; want it before the stream ends", line, err)
	}
}

func TestAuthRequiredWithCredentials(t *testing.T) {
	api := &fakeAPI{}
	h := Handler(api, nil, testCred)
	wrongUser := &Credentials{User: "root", Password: testCred.Password}
	wrongPass := &Credentials{User: testCred.User, Password: "s3cret-dashboard-p"}
	for _, path := range []string{"/", "/app.js", "/v1/jobs", "/v1/events", "/_ping", "/nope"} {
		for _, c := range []*Credentials{nil, wrongUser, wrongPass} {
			w := do(h, "GET", path, c)
			if w.Code != http.StatusUnauthorized {
				t.Errorf("GET %s with %+v: %d, want 401", path, c, w.Code)
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("GET %s: WWW-Authenticate %q, want Basic", path, got)
			}
		}
		if w := do(h, "GET", path, testCred); w.Code == http.StatusUnauthorized {
			t.Errorf("GET %s with the right credentials: 401", path)
		}
	}
	if w := do(h, "POST", "/v1/jobs/06h17gxw9sr0xqcw/cancel", nil); w.Code != http.StatusUnauthorized {
		t.Errorf("cancel without credentials: %d, want 401", w.Code)
	}
	for _, r := range api.requests() {
		if r.Method != "GET" {
			t.Errorf("the API saw %s %s without credentials", r.Method, r.URL)
		}
	}
}

func TestCancelOnlyWithCredentials(t *testing.T) {
	const path = "/v1/jobs/06h17gxw9sr0xqcw/cancel"

	api := &fakeAPI{}
	if w := do(Handler(api, nil, nil), "POST", path, testCred); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("cancel on a read-only dashboard: %d, want 405", w.Code)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("a read-only dashboard forwarded a cancel")
	}

	api = &fakeAPI{}
	h := Handler(api, nil, testCred)
	w := do(h, "POST", path, testCred, "Sec-Fetch-Site", "same-origin")
	if want := `{"api":"POST ` + path + `"}`; w.Code != http.StatusOK || w.Body.String() != want {
		t.Fatalf("cancel with credentials: %d %s, want the API's answer %s", w.Code, w.Body, want)
	}
	reqs := api.requests()
	if len(reqs) != 1 {
		t.Fatalf("the API saw %d requests, want 1", len(reqs))
	}
	if got := reqs[0].Header.Get("Authorization"); got != "" {
		t.Errorf("the dashboard's credentials reached the API: Authorization %q", got)
	}

	// A page on another site cannot make a logged-in browser cancel.
	if w := do(h, "POST", path, testCred, "Sec-Fetch-Site", "cross-site"); w.Code != http.StatusForbidden {
		t.Errorf("cross-site cancel: %d, want 403", w.Code)
	}
	if w := do(h, "POST", path, testCred, "Origin", "http://evil.example"); w.Code != http.StatusForbidden {
		t.Errorf("cancel from another origin: %d, want 403", w.Code)
	}
	// The other writes stay refused.
	for _, p := range []string{"/v1/jobs", "/v1/jobs/06h17gxw9sr0xqcw/push"} {
		if w := do(h, "POST", p, testCred); w.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s with credentials: %d, want 405", p, w.Code)
		}
	}
	if n := len(api.requests()); n != 1 {
		t.Errorf("the API saw %d requests, want only the one cancel", n)
	}
}

func TestSecurityHeaders(t *testing.T) {
	for _, cred := range []*Credentials{nil, testCred} {
		h := Handler(&fakeAPI{}, nil, cred)
		for _, tc := range []struct{ method, path string }{
			{"GET", "/"}, {"GET", "/app.js"}, {"GET", "/v1/jobs"}, {"GET", "/nope"}, {"POST", "/v1/jobs"},
		} {
			for _, c := range []*Credentials{nil, cred} { // with cred set, nil gives the 401
				w := do(h, tc.method, tc.path, c)
				for k, want := range map[string]string{
					"Content-Security-Policy": "default-src 'self'",
					"X-Content-Type-Options":  "nosniff",
					"X-Frame-Options":         "DENY",
				} {
					if got := w.Header().Get(k); !strings.HasPrefix(got, want) {
						t.Errorf("%s %s (%d): %s %q, want %q", tc.method, tc.path, w.Code, k, got, want)
					}
				}
				if csp := w.Header().Get("Content-Security-Policy"); strings.Contains(csp, "unsafe") || strings.Contains(csp, "*") {
					t.Errorf("Content-Security-Policy %q allows more than 'self'", csp)
				}
			}
		}
	}
}

func TestMetrics(t *testing.T) {
	api := &fakeAPI{}
	if w := do(Handler(api, nil, nil), "GET", "/metrics", nil); w.Code != http.StatusNotFound {
		t.Errorf("GET /metrics without a metrics handler: %d, want 404", w.Code)
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "gantry_jobs 3\n") })
	h := Handler(api, metrics, testCred)
	if w := do(h, "GET", "/metrics", nil); w.Code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without credentials: %d, want 401", w.Code)
	}
	if w := do(h, "GET", "/metrics", testCred); w.Code != http.StatusOK || w.Body.String() != "gantry_jobs 3\n" {
		t.Errorf("GET /metrics: %d %q, want the metrics", w.Code, w.Body)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("/metrics reached the API")
	}
}

// Neither the registry's credentials (in the Docker config gantryd pushes
// with) nor the dashboard's own password is in anything the dashboard
// answers.
func TestNoCredentialsInResponses(t *testing.T) {
	const registrySecret = "registry-pw-8c1f"
	auth := base64.StdEncoding.EncodeToString([]byte("pusher:" + registrySecret))
	dir := t.TempDir()
	config := `{"auths": {"127.0.0.1:5000": {"auth": "` + auth + `"}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)

	secrets := []string{registrySecret, auth, testCred.Password,
		base64.StdEncoding.EncodeToString([]byte(testCred.User + ":" + testCred.Password))}
	api := &fakeAPI{}
	h := Handler(api, nil, testCred)
	for _, tc := range []struct {
		method, path string
		cred         *Credentials
	}{
		{"GET", "/", testCred}, {"GET", "/app.js", testCred}, {"GET", "/style.css", testCred},
		{"GET", "/v1/jobs", testCred}, {"GET", "/v1/version", testCred}, {"GET", "/nope", testCred},
		{"POST", "/v1/jobs", testCred}, {"GET", "/", nil},
		{"GET", "/", &Credentials{User: testCred.User, Password: "wrong"}},
	} {
		w := do(h, tc.method, tc.path, tc.cred)
		var dump strings.Builder
		w.Header().Write(&dump)
		dump.WriteString(w.Body.String())
		for _, s := range secrets {
			if strings.Contains(dump.String(), s) {
				t.Errorf("%s %s answers with a credential (%q):\n%s", tc.method, tc.path, s, dump.String())
			}
		}
	}
	for _, r := range api.requests() {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("%s %s reached the API with the dashboard's Authorization header", r.Method, r.URL)
		}
	}
}
