package api

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// What a browser sends is refused before the API sees it; what a program
// sends goes through.
func TestRefuseBrowsers(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		headers map[string]string
		refused bool
	}{
		{"origin on a read", "GET", map[string]string{"Origin": "https://evil.example"}, true},
		{"null origin", "POST", map[string]string{"Origin": "null", "Content-Type": "application/x-tar"}, true},
		{"sec-fetch-site", "GET", map[string]string{"Sec-Fetch-Site": "cross-site"}, true},
		{"sec-fetch-mode", "GET", map[string]string{"Sec-Fetch-Mode": "no-cors"}, true},
		{"text/plain post", "POST", map[string]string{"Content-Type": "text/plain"}, true},
		{"text/plain post with parameters", "POST", map[string]string{"Content-Type": "Text/Plain ; charset=UTF-8"}, true},
		{"form post", "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, true},
		{"multipart post", "POST", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, true},
		{"text/plain delete", "DELETE", map[string]string{"Content-Type": "text/plain"}, true},
		{"text/plain put", "PUT", map[string]string{"Content-Type": "text/plain"}, true},
		{"text/plain patch", "PATCH", map[string]string{"Content-Type": "text/plain"}, true},
		{"tar post", "POST", map[string]string{"Content-Type": "application/x-tar"}, false},
		{"json post", "POST", map[string]string{"Content-Type": "application/json"}, false},
		{"post without a body", "POST", nil, false},
		{"plain read", "GET", nil, false},
		{"read with a text/plain type", "GET", map[string]string{"Content-Type": "text/plain"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reached := false
			h := RefuseBrowsers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
			r := httptest.NewRequest(tc.method, "/v1/jobs", strings.NewReader("x"))
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if tc.refused {
				if w.Code != http.StatusForbidden || reached || !strings.Contains(w.Body.String(), "web browser") {
					t.Errorf("status %d, handler reached %v, body %q; want 403 saying why, the handler not reached", w.Code, reached, w.Body)
				}
				return
			}
			if w.Code != http.StatusOK || !reached {
				t.Errorf("status %d, handler reached %v; want it through", w.Code, reached)
			}
		})
	}
}

// Each call of the gantry CLI's client passes RefuseBrowsers.
func TestClientPassesRefuseBrowsers(t *testing.T) {
	job := &gantry.Job{ID: "06h0000000000000", State: gantry.StateSucceeded}
	svc := &fakeService{
		submit: func(_ context.Context, _ gantry.Spec, _ map[string]string, tar io.Reader) (*gantry.Job, error) {
			io.Copy(io.Discard, tar)
			return job, nil
		},
		get: func(context.Context, string) (*gantry.Job, error) { return job, nil },
		list: func(context.Context, gantry.JobFilter) ([]*gantry.Job, string, error) {
			return []*gantry.Job{job}, "", nil
		},
		logs:   func(context.Context, string, bool, io.Writer) error { return nil },
		cancel: func(context.Context, string) (*gantry.Job, error) { return job, nil },
		push:   func(context.Context, string, []string, gantry.Reporter) (*gantry.Job, error) { return job, nil },
		events: func(context.Context, uint64, string, bool, func(*gantry.Event) error) error { return nil },
	}
	sock := filepath.Join(shortTempDir(t), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: RefuseBrowsers(handler(svc, nil))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := NewClient("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"version": func() error { _, err := c.Version(ctx); return err },
		"submit": func() error {
			_, err := c.Submit(ctx, gantry.Spec{}, nil, bytes.NewReader(make([]byte, 1024)))
			return err
		},
		"get":     func() error { _, err := c.Get(ctx, job.ID); return err },
		"list":    func() error { _, _, err := c.List(ctx, gantry.JobFilter{}); return err },
		"logs":    func() error { return c.Logs(ctx, job.ID, true, io.Discard) },
		"cancel":  func() error { _, err := c.Cancel(ctx, job.ID); return err },
		"push":    func() error { _, err := c.Push(ctx, job.ID, []string{"127.0.0.1:5000/a"}); return err },
		"push -p": func() error { _, err := c.PushProgress(ctx, job.ID, nil, gantry.Discard); return err },
		"events":  func() error { return c.Events(ctx, 0, "", false, func(gantry.Event) error { return nil }) },
	}
	for name, call := range calls {
		if err := call(); err != nil {
			t.Errorf("client %s through RefuseBrowsers: %v", name, err)
		}
	}
}
