// Command gantryd is gantry's daemon: it serves the API on a unix socket,
// keeps job records in bbolt, builds with BuildKit, trains on the Docker
// engine and pushes with go-containerregistry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
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

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gantryd:", err)
		os.Exit(1)
	}
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/gantry"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "gantry")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "gantry")
}

func run() error {
	var (
		socket      = flag.String("socket", api.DefaultSocket(), "unix socket to serve the API on")
		dataDir     = flag.String("data-dir", defaultDataDir(), "directory for the job records and logs")
		dockerHost  = flag.String("docker-host", "", "Docker engine address (default: DOCKER_HOST, else the local socket)")
		bkAddr      = flag.String("buildkit-addr", "", "standalone buildkitd address (default: the Docker engine's embedded BuildKit)")
		maxJobs     = flag.Int("max-jobs", 2, "jobs running at once")
		stopTimeout = flag.Duration("stop-timeout", 10*time.Second, "grace period between SIGTERM and SIGKILL when a training container is stopped")
		blobCache   = flag.String("blob-cache", "20g", "size the kept compressed image layers (DATA_DIR/blobs) may reach before the least recently used go (0: no limit)")
		sockGroup   = flag.String("socket-group", "", "group that may use the socket (default: gantry when that group exists, else root only)")
		tcpAddr     = flag.String("tcp", "", "also serve the API on this TCP address, with mutual TLS (--tlscacert, --tlscert, --tlskey)")
		tlsCA       = flag.String("tlscacert", "", "CA whose client certificates the TCP listener trusts")
		tlsCert     = flag.String("tlscert", "", "the TCP listener's certificate")
		tlsKey      = flag.String("tlskey", "", "the TCP listener's key")
		orphanGrace = flag.Duration("orphan-grace", time.Minute, "how long a container with gantryd's label but no job is left before it is removed")
		debug       = flag.Bool("debug", false, "log at debug level")
		httpAddr    = flag.String("http", "", "serve the dashboard on this loopback address, e.g. 127.0.0.1:8080 (empty: no dashboard)")
		httpUser    = flag.String("http-user", "", "user the dashboard asks for; with --http-password-file it also allows cancel (default: read-only, no login)")
		httpPass    = flag.String("http-password-file", "", "file holding the password of --http-user")
	)
	var pf policyFlags
	pf.register(flag.CommandLine)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see gantryd -h)", flag.Args())
	}
	policy, err := pf.policy()
	if err != nil {
		return err
	}
	blobMax, err := gantry.ParseBytes(*blobCache)
	if err != nil {
		return fmt.Errorf("--blob-cache: %w", err)
	}
	cred, err := httpCredentials(*httpAddr, *httpUser, *httpPass)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	st, err := store.Open(filepath.Join(*dataDir, "gantry.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	instance, err := st.Instance()
	if err != nil {
		return err
	}

	eng, err := runner.Dial(ctx, *dockerHost)
	if err != nil {
		return err
	}
	defer eng.Close()
	engineVersion, engineAPI, err := eng.Version(ctx)
	if err != nil {
		return err
	}
	bk, err := builder.Dial(ctx, *bkAddr, eng.Hijack, eng.Load)
	if err != nil {
		return err
	}
	defer bk.Close()

	// Images read for a push are buffered here; a crash may leave some.
	tmpDir := filepath.Join(*dataDir, "tmp")
	os.RemoveAll(tmpDir)
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	cache, err := blobs.Open(filepath.Join(*dataDir, "blobs"), blobMax)
	if err != nil {
		return err
	}
	pushMetrics := newPushMetrics(cache)
	src := &layers.Source{Cache: cache, Engine: eng.Client(), TmpDir: tmpDir,
		Reads: func(how string, diffID v1.Hash) {
			pushMetrics.compressed.WithLabelValues(how).Inc()
			log.Info("layer read from the engine and compressed", "diff_id", diffID, "via", how)
		},
		Fallback: func(ref string, err error) {
			pushMetrics.fallbacks.Inc()
			log.Warn("image not readable from the engine's layer store: reading it with docker save", "image", ref, "err", err)
		}}
	if root, driver, err := eng.Storage(ctx); err != nil {
		return err
	} else if err := layers.Readable(root, driver); err == nil {
		src.Root, src.Driver = root, driver
		log.Info("image layers are read from the engine's layer store", "root", root, "driver", driver)
	} else {
		log.Info("image layers are read with docker save: the engine's layer store is not readable here", "root", root, "driver", driver, "err", err)
	}
	// The cache is pruned now, for a --blob-cache lowered since the last
	// run, and by the daemon after each job.
	if n, err := cache.Prune(); err != nil {
		log.Warn("prune the blob cache", "err", err)
	} else if n > 0 {
		log.Info("pruned the blob cache", "freed", gantry.HumanBytes(n))
	}
	d, err := daemon.New(daemon.Config{
		DataDir:     *dataDir,
		Instance:    instance,
		MaxJobs:     *maxJobs,
		Policy:      policy,
		StopTimeout: *stopTimeout,
		OrphanGrace: *orphanGrace,
		Logger:      log,
		Prune:       cache.Prune,
	}, st, bk, eng, registry.New(registry.WithInsecureRegistries(policy.InsecureRegistries)), src.Image)
	if err != nil {
		return err
	}
	if err := d.Prepare(ctx); err != nil {
		return err
	}

	gid, err := socketGroup(*sockGroup)
	if err != nil {
		return err
	}
	ln, err := listen(*socket, gid)
	if err != nil {
		return err
	}
	versions := func(context.Context) api.VersionInfo {
		return api.VersionInfo{Version: gantry.Version, APIVersion: api.Version, Engine: engineVersion, EngineAPI: engineAPI}
	}
	m := metrics.New(&metricsSource{Daemon: d, counts: st.Counts})
	if err := m.Register(pushMetrics.collectors()...); err != nil {
		return err
	}
	go m.Run(ctx)
	apiHandler := api.Handler(d, versions, log)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("/", apiHandler)
	srv := &http.Server{
		Handler:           api.Logged(mux, log),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext:       api.ConnContext,
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	if *tcpAddr != "" {
		tln, err := listenTCP(*tcpAddr, api.TLSFiles{CA: *tlsCA, Cert: *tlsCert, Key: *tlsKey})
		if err != nil {
			srv.Close()
			os.Remove(*socket)
			return err
		}
		go func() { served <- srv.Serve(tln) }()
		log.Info("serving the API over mutual TLS", "addr", tln.Addr().String())
	}
	log.Info("gantryd serving", "socket", *socket, "data_dir", *dataDir, "instance", instance,
		"engine", engineVersion, "engine_api", engineAPI, "max_jobs", *maxJobs)
	stopHTTP := func(context.Context) error { return nil }
	if *httpAddr != "" {
		if stopHTTP, err = serveHTTP(ctx, *httpAddr, dashboard.Handler(apiHandler, m.Handler(), cred), log); err != nil {
			srv.Close()
			os.Remove(*socket)
			return err
		}
	}

	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()

	select {
	case err = <-served:
		stop()
	case err = <-ran:
		stop()
	case <-ctx.Done():
	}
	log.Info("gantryd shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	stopHTTP(sctx)
	if e := <-ran; err == nil {
		err = e
	}
	os.Remove(*socket)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
