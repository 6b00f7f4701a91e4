package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
	"github.com/gantry-ml/gantry/blobs"
	"github.com/gantry-ml/gantry/daemon"
)

// socketGroup returns the gid that may use the socket: name's, or when name
// is empty the "gantry" group's if it exists, else -1 (root only).
func socketGroup(name string) (int, error) {
	lookup := name
	if lookup == "" {
		lookup = "gantry"
	}
	g, err := user.LookupGroup(lookup)
	if err != nil {
		if name == "" {
			return -1, nil
		}
		return 0, fmt.Errorf("--socket-group %s: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// listen opens the API socket, mode 0660, owned by group gid (-1: root's).
// It refuses a path that is a symlink or another kind of file, and one a
// live gantryd answers on; a socket file left by a gantryd that is gone is
// replaced.
func listen(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			return nil, fmt.Errorf("socket %s: is a symlink; refusing to follow it (remove it or choose another --socket)", path)
		case fi.Mode()&os.ModeSocket == 0:
			return nil, fmt.Errorf("socket %s: exists and is not a socket; remove it or choose another --socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another gantryd is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	mode := os.FileMode(0o660)
	if gid < 0 {
		mode, gid = 0o600, os.Getegid()
	}
	if err := os.Chown(path, os.Geteuid(), gid); err == nil {
		err = os.Chmod(path, mode)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ln, nil
}

// listenTCP opens the API's TCP listener. It speaks mutual TLS only, on
// loopback too: any local user, and any web page a local browser shows, can
// reach a loopback port, so without the three files it refuses to start.
// It keeps at most maxConns connections open (see api.LimitListener).
func listenTCP(addr string, files api.TLSFiles, maxConns int) (net.Listener, error) {
	if err := checkTCP(addr, files); err != nil {
		return nil, err
	}
	cfg, err := api.ServerTLS(files)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--tcp: %w", err)
	}
	return api.LimitListener(ln, maxConns, cfg), nil
}

// checkTCP refuses a --tcp address that is not HOST:PORT, and one given
// without all three TLS files.
func checkTCP(addr string, files api.TLSFiles) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--tcp %q: want HOST:PORT: %w", addr, err)
	}
	if files.CA == "" || files.Cert == "" || files.Key == "" {
		return fmt.Errorf("--tcp %s: refusing to serve the API over TCP without TLS: give --tlscacert (the CA whose client certificates are let in), --tlscert and --tlskey (the listener's certificate and key); clients then use gantry -H tcp://%s with their own --tlscacert, --tlscert and --tlskey", addr, addr)
	}
	return nil
}

// apiServer is the http.Server of the API's socket and TCP listeners (made
// with api.LimitListener). Browsers' requests are refused; request bodies
// must keep coming (api.DefaultBodyLimits); a kept-alive connection closes
// after idle. No write timeout: followed logs, events and pushes stream
// for as long as they last. Requests end when ctx does.
func apiServer(ctx context.Context, h http.Handler, idle time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           api.Logged(api.RefuseBrowsers(api.BoundBodies(h, api.DefaultBodyLimits)), log),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idle,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       api.ConnContext,
		ConnState:         api.ConnState,
	}
}

// metricsSource gives the metrics the daemon's events and records, and the
// store's counts.
type metricsSource struct {
	*daemon.Daemon
	counts func(context.Context) (map[gantry.State]int, error)
}

func (s *metricsSource) Counts(ctx context.Context) (map[gantry.State]int, error) {
	return s.counts(ctx)
}

// pushMetrics are the push path's: how many layers gantryd read from the
// engine and compressed (by how it read them), how often the layer store
// could not be used, and the size of the kept blobs.
type pushMetrics struct {
	compressed *prometheus.CounterVec
	fallbacks  prometheus.Counter
	size       prometheus.GaugeFunc
}

func newPushMetrics(cache *blobs.Cache) *pushMetrics {
	m := &pushMetrics{
		compressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_layers_compressed_total",
			Help: "Layers read from the engine and compressed for a push, by how they were read: store (the engine's layer store) or save (docker save). A layer kept compressed is not counted again.",
		}, []string{"via"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_layer_store_fallbacks_total",
			Help: "Images that could not be read from the engine's layer store and were read with docker save.",
		}),
		size: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gantry_blob_store_bytes",
			Help: "Bytes of the compressed layers and configs kept in DATA_DIR/blobs.",
		}, func() float64 {
			n, _ := cache.Size()
			return float64(n)
		}),
	}
	for _, via := range []string{"store", "save"} {
		m.compressed.WithLabelValues(via)
	}
	return m
}

func (m *pushMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.compressed, m.fallbacks, m.size}
}
