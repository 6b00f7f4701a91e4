package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gantry-ml/gantry/dashboard"
)

// httpCredentials reads the dashboard's credentials from the flags: a user
// and a file holding the password, both or neither. Neither gives nil: a
// read-only dashboard.
func httpCredentials(addr, user, passwordFile string) (*dashboard.Credentials, error) {
	if user == "" && passwordFile == "" {
		return nil, nil
	}
	if addr == "" {
		return nil, errors.New("--http-user and --http-password-file need --http")
	}
	if user == "" || passwordFile == "" {
		return nil, errors.New("--http-user and --http-password-file go together: give both or neither")
	}
	b, err := os.ReadFile(passwordFile)
	if err != nil {
		return nil, fmt.Errorf("--http-password-file: %w", err)
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" {
		return nil, fmt.Errorf("--http-password-file %s: the file is empty", passwordFile)
	}
	return &dashboard.Credentials{User: user, Password: pass}, nil
}

// serveHTTP serves h on addr, a loopback address ("127.0.0.1:8080", "[::1]:8080",
// "localhost:8080"; a bare ":8080" means 127.0.0.1), until the returned
// function shuts it down. The listener speaks plain HTTP, so it refuses any
// address other hosts could reach. Requests end when ctx does.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (func(context.Context) error, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--http %q: want HOST:PORT, like 127.0.0.1:8080: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if !loopback(host) {
		return nil, fmt.Errorf("--http %s: %s is not a loopback address; the dashboard serves plain HTTP, so it listens only on 127.0.0.1, ::1 or localhost (reach it from elsewhere through an SSH tunnel)", addr, host)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("--http: %w", err)
	}
	srv := &http.Server{
		Handler:           loopbackHostOnly(h),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard stopped serving", "err", err)
		}
	}()
	log.Info("dashboard serving", "url", "http://"+ln.Addr().String()+"/")
	return srv.Shutdown, nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHostOnly refuses requests whose Host is a name other than
// localhost: a page on another site that rebinds its name to 127.0.0.1 must
// not be able to read the dashboard.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		if !loopback(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")) {
			http.Error(w, "gantry dashboard: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}
