package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
	"github.com/gantry-ml/gantry/blobs"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/daemon"
	"github.com/gantry-ml/gantry/dashboard"
	"github.com/gantry-ml/gantry/layers"
	"github.com/gantry-ml/gantry/metrics"
	"github.com/gantry-ml/gantry/registry"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/store"
)

// Main is gantryd: ParseFlags fills in its Config, Run opens what it needs
// and starts serving, Close stops it. Tests run it in process.
type Main struct {
	Config Config

	log    *slog.Logger
	store  *store.Store
	engine *runner.Engine
	// backend is where training runs: engine, or a swarm (closed by
	// closeBackend).
	backend      daemon.Engine
	closeBackend func() error
	builder      *builder.Builder
	daemon       *daemon.Daemon
	metrics      *metrics.Metrics
	push         *pushMetrics
	version      api.VersionInfo
	instance     string                      // the store's, for the engine's labels
	server       *http.Server                // the API's, on the socket and --tcp
	stopWeb      func(context.Context) error // the dashboard's shutdown
	socket       bool                        // Run made the socket file: Close removes it
	serving      bool                        // Run returned nil
	cancel       context.CancelFunc          // ends the daemon's lifetime
	bg           sync.WaitGroup              // the daemon's and the metrics' Run
	ranErr       error                       // what the daemon's Run returned
	done         chan struct{}               // closed by fail
	failed       sync.Once
	err          error // the first reason to stop, set once by fail
}

// NewMain returns a gantryd with an empty Config; fill it in with ParseFlags.
func NewMain() *Main {
	return &Main{done: make(chan struct{})}
}

// Run opens the store, dials the engine and BuildKit, makes the daemon and
// serves the API (socket and --tcp), the metrics and the dashboard, then
// starts the daemon's scheduler and returns. ctx bounds the opening only:
// the daemon lives until Close, which must be called, also when Run fails.
func (m *Main) Run(ctx context.Context) error {
	m.log = newLogger(m.Config.Debug)
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	if err := m.openStore(); err != nil {
		return err
	}
	if err := m.dialEngine(ctx); err != nil {
		return err
	}
	parts, err := m.openPush(ctx)
	if err != nil {
		return err
	}
	if err := m.newDaemon(ctx, parts); err != nil {
		return err
	}
	if err := m.newMetrics(life); err != nil {
		return err
	}
	apiHandler := api.Handler(m.daemon, func(context.Context) api.VersionInfo { return m.version }, m.log)
	if err := m.serveAPI(life, apiHandler); err != nil {
		return err
	}
	if m.Config.HTTP != "" {
		web := dashboard.Handler(apiHandler, m.metrics.Handler(), m.Config.Credentials)
		if m.stopWeb, err = serveHTTP(life, m.Config.HTTP, web, m.log); err != nil {
			return err
		}
	}
	m.startDaemon(life)
	m.serving = true
	return nil
}

// Done is closed when gantryd cannot go on: an API listener stopped serving
// or the daemon's scheduler returned. Close says why.
func (m *Main) Done() <-chan struct{} { return m.done }

// fail records the first reason to stop and closes Done.
func (m *Main) fail(err error) {
	m.failed.Do(func() { m.err = err; close(m.done) })
}

// Close stops what Run started, in order: the API and dashboard servers
// (requests get 15s to finish), the daemon's scheduler (waited for), the
// socket file, BuildKit, the engine and the store. It is safe after a
// failed Run. It returns the first reason gantryd stopped serving, else
// what the scheduler returned.
func (m *Main) Close() error {
	if m.cancel != nil {
		m.cancel()
	}
	if m.serving {
		m.log.Info("gantryd shutting down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if m.server != nil {
		m.server.Shutdown(ctx)
	}
	if m.stopWeb != nil {
		m.stopWeb(ctx)
	}
	m.bg.Wait()
	if m.socket {
		os.Remove(m.Config.Socket)
	}
	if m.builder != nil {
		m.builder.Close()
	}
	if m.closeBackend != nil {
		m.closeBackend()
	}
	if m.engine != nil {
		m.engine.Close()
	}
	if m.store != nil {
		m.store.Close()
	}
	m.server, m.stopWeb, m.socket, m.serving = nil, nil, false, false
	m.builder, m.engine, m.store, m.backend, m.closeBackend = nil, nil, nil, nil, nil
	m.fail(m.ranErr)
	return m.err
}

func newLogger(debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func (m *Main) openStore() error {
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	st, err := store.Open(filepath.Join(m.Config.DataDir, "gantry.db"))
	if err != nil {
		return err
	}
	m.store = st
	m.instance, err = st.Instance()
	return err
}

// dialEngine dials the Docker engine and BuildKit (the engine's, unless
// --buildkit-addr names another).
func (m *Main) dialEngine(ctx context.Context) error {
	eng, err := runner.Dial(ctx, m.Config.DockerHost)
	if err != nil {
		return err
	}
	m.engine = eng
	m.version = api.VersionInfo{Version: gantry.Version, APIVersion: api.Version}
	if m.version.Engine, m.version.EngineAPI, err = eng.Version(ctx); err != nil {
		return err
	}
	if m.builder, err = builder.Dial(ctx, m.Config.BuildKitAddr, m.Config.BuildKitTLS, eng.Hijack, eng.Load); err != nil {
		return err
	}
	return m.dialBackend(ctx)
}

// pushParts are what the daemon pushes with: the registry client, the
// reader of the engine's images, and the blob cache's pruning.
type pushParts struct {
	pusher *registry.Pusher
	source func(context.Context, string) (v1.Image, error)
	prune  func() (int64, error)
}

// openPush opens the blob cache, the reader of the engine's layers and the
// registry client. The cache is pruned now, for a --blob-cache lowered
// since the last run, and by the daemon after each job.
func (m *Main) openPush(ctx context.Context) (pushParts, error) {
	// Images read for a push are buffered here; a crash may leave some.
	tmpDir := filepath.Join(m.Config.DataDir, "tmp")
	os.RemoveAll(tmpDir)
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return pushParts{}, fmt.Errorf("data dir: %w", err)
	}
	cache, err := blobs.Open(filepath.Join(m.Config.DataDir, "blobs"), m.Config.BlobCache)
	if err != nil {
		return pushParts{}, err
	}
	log, pm := m.log, newPushMetrics(cache)
	m.push = pm
	src := &layers.Source{Cache: cache, Engine: m.engine.Client(), TmpDir: tmpDir,
		Reads: func(how string, diffID v1.Hash) {
			pm.compressed.WithLabelValues(how).Inc()
			log.Info("layer read from the engine and compressed", "diff_id", diffID, "via", how)
		},
		Fallback: func(ref string, err error) {
			pm.fallbacks.Inc()
			log.Warn("image not readable from the engine's layer store: reading it with docker save", "image", ref, "err", err)
		}}
	if root, driver, err := m.engine.Storage(ctx); err != nil {
		return pushParts{}, err
	} else if err := layers.Readable(root, driver); err == nil {
		src.Root, src.Driver = root, driver
		log.Info("image layers are read from the engine's layer store", "root", root, "driver", driver)
	} else {
		log.Info("image layers are read with docker save: the engine's layer store is not readable here", "root", root, "driver", driver, "err", err)
	}
	if n, err := cache.Prune(); err != nil {
		log.Warn("prune the blob cache", "err", err)
	} else if n > 0 {
		log.Info("pruned the blob cache", "freed", gantry.HumanBytes(n))
	}
	pusher := registry.New(registry.WithInsecureRegistries(m.Config.Policy.InsecureRegistries))
	return pushParts{pusher: pusher, source: stagedSource(pusher, src.Image), prune: cache.Prune}, nil
}

// newDaemon makes the daemon and has it recover the jobs a previous
// gantryd left.
func (m *Main) newDaemon(ctx context.Context, p pushParts) error {
	var err error
	m.daemon, err = daemon.New(daemon.Config{
		DataDir:     m.Config.DataDir,
		Instance:    m.instance,
		MaxJobs:     m.Config.MaxJobs,
		Policy:      m.Config.Policy,
		StopTimeout: m.Config.StopTimeout,
		OrphanGrace: m.Config.OrphanGrace,
		Stage:       m.Config.Stage,
		BuildStages: m.Config.BuildKitAddr != "",
		BuildCache:  m.Config.BuildCache,
		Logger:      m.log,
		Prune:       p.prune,
		Webhooks:    m.Config.Webhooks,
		Retention:   m.Config.Retention,
		Cleaner:     m.engine,
	}, m.store, m.builder, m.backend, p.pusher, p.source)
	if err != nil {
		return err
	}
	return m.daemon.Prepare(ctx)
}

// newMetrics makes the metrics and follows the daemon's events into them
// until ctx ends.
func (m *Main) newMetrics(ctx context.Context) error {
	m.metrics = metrics.New(&metricsSource{Daemon: m.daemon, counts: m.store.Counts})
	if err := m.metrics.Register(m.push.collectors()...); err != nil {
		return err
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		m.metrics.Run(ctx)
	}()
	return nil
}

// serveAPI serves h and the metrics on the socket, and on --tcp when given.
func (m *Main) serveAPI(ctx context.Context, h http.Handler) error {
	gid, err := socketGroup(m.Config.SocketGroup)
	if err != nil {
		return err
	}
	ln, err := listen(m.Config.Socket, gid)
	if err != nil {
		return err
	}
	m.socket = true
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.metrics.Handler())
	mux.Handle("/", h)
	m.server = apiServer(ctx, mux, 2*time.Minute, m.log)
	m.serve(api.LimitListener(ln, m.Config.MaxConns, nil))
	if m.Config.TCP != "" {
		tln, err := listenTCP(m.Config.TCP, m.Config.TLS, m.Config.MaxConns)
		if err != nil {
			return err
		}
		m.serve(tln)
		m.log.Info("serving the API over mutual TLS: clients need a certificate from --tlscacert", "addr", tln.Addr().String(), "tlscacert", m.Config.TLS.CA)
	}
	m.log.Info("gantryd serving", "socket", m.Config.Socket, "data_dir", m.Config.DataDir, "instance", m.instance,
		"engine", m.version.Engine, "engine_api", m.version.EngineAPI, "max_jobs", m.Config.MaxJobs)
	return nil
}

// serve serves the API on ln until Close; a listener that fails ends gantryd.
func (m *Main) serve(ln net.Listener) {
	go func() {
		if err := m.server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			m.fail(err)
		}
	}()
}

// startDaemon runs the daemon's scheduler until Close; if it returns before,
// gantryd stops.
func (m *Main) startDaemon(ctx context.Context) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		m.ranErr = m.daemon.Run(ctx)
		if ctx.Err() == nil {
			m.fail(m.ranErr)
		}
	}()
}
