package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeHTTPListensOnlyOnLoopback(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "dashboard") })
	for _, tc := range []struct {
		addr   string
		refuse string // part of the error; "" when the address is fine
	}{
		{"127.0.0.1:0", ""},
		{":0", ""}, // a bare port means 127.0.0.1
		{"localhost:0", ""},
		{"0.0.0.0:0", "not a loopback address"},
		{"[::]:0", "not a loopback address"},
		{"192.0.2.1:0", "not a loopback address"},
		{"example.com:0", "not a loopback address"},
		{"8080", "want HOST:PORT"},
	} {
		stop, err := serveHTTP(context.Background(), tc.addr, ok, log)
		if tc.refuse != "" {
			if err == nil || !strings.Contains(err.Error(), tc.refuse) {
				t.Errorf("serveHTTP(%q): %v, want an error saying %q", tc.addr, err, tc.refuse)
			}
			if stop != nil {
				stop(context.Background())
			}
			continue
		}
		if err != nil {
			t.Errorf("serveHTTP(%q): %v", tc.addr, err)
			continue
		}
		stop(context.Background())
	}
}

// A site that rebinds its name to 127.0.0.1 gets nothing.
func TestLoopbackHostOnly(t *testing.T) {
	h := loopbackHostOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for host, want := range map[string]int{
		"127.0.0.1:8080":  http.StatusOK,
		"localhost:8080":  http.StatusOK,
		"[::1]:8080":      http.StatusOK,
		"127.0.0.1":       http.StatusOK,
		"[::1]":           http.StatusOK,
		"evil.example":    http.StatusMisdirectedRequest,
		"evil.example:80": http.StatusMisdirectedRequest,
		"192.0.2.1:8080":  http.StatusMisdirectedRequest,
	} {
		r, _ := http.NewRequest("GET", "http://"+host+"/v1/jobs", nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s: %d, want %d", host, w.Code, want)
		}
	}
}

func TestHTTPCredentials(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	empty := filepath.Join(dir, "empty")
	for path, content := range map[string]string{pw: "hunter2\n", empty: "\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if c, err := httpCredentials("127.0.0.1:8080", "", ""); c != nil || err != nil {
		t.Errorf("no user, no password: %v, %v; want a read-only dashboard", c, err)
	}
	c, err := httpCredentials("127.0.0.1:8080", "ops", pw)
	if err != nil || c == nil || c.User != "ops" || c.Password != "hunter2" {
		t.Errorf("user and password file: %+v, %v; want ops/hunter2 without the newline", c, err)
	}
	for _, tc := range []struct{ addr, user, file, refuse string }{
		{"127.0.0.1:8080", "ops", "", "both or neither"},
		{"127.0.0.1:8080", "", pw, "both or neither"},
		{"", "ops", pw, "need --http"},
		{"127.0.0.1:8080", "ops", filepath.Join(dir, "missing"), "--http-password-file"},
		{"127.0.0.1:8080", "ops", empty, "empty"},
	} {
		if _, err := httpCredentials(tc.addr, tc.user, tc.file); err == nil || !strings.Contains(err.Error(), tc.refuse) {
			t.Errorf("httpCredentials(%q, %q, %q): %v, want an error saying %q", tc.addr, tc.user, tc.file, err, tc.refuse)
		}
	}
}
