package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/daemon"
	"github.com/gantry-ml/gantry/dashboard"
)

// Config is what gantryd's flags say, checked: ParseFlags fills it in.
type Config struct {
	Socket       string        // the API's unix socket
	SocketGroup  string        // group that may use it ("": gantry if it exists, else root only)
	DataDir      string        // job records, logs, contexts, kept blobs
	DockerHost   string        // "": DOCKER_HOST, else the local socket
	BuildKitAddr string        // "": the engine's embedded BuildKit
	BuildKitTLS  builder.TLS   // mutual TLS to a tcp:// buildkitd
	BuildCache   string        // registry reference of the build cache ("": none)
	MaxJobs      int           // jobs running at once
	StopTimeout  time.Duration // SIGTERM to SIGKILL of a training container
	OrphanGrace  time.Duration // before a labelled container with no job is removed
	BlobCache    int64         // bytes the kept blobs may reach (0: no limit)
	MaxConns     int           // connections each API listener keeps open
	TCP          string        // also serve the API here, with mutual TLS ("": not)
	TLS          api.TLSFiles  // the TCP listener's CA, certificate and key
	HTTP         string        // the dashboard's loopback address ("": no dashboard)
	Credentials  *dashboard.Credentials
	Debug        bool
	Policy       gantry.Policy
	Stage        string               // --staging-repo
	Webhooks     daemon.WebhookConfig // --webhook, --webhook-secret-file
	Retention    retention            // --retain, --retain-per-image, --build-cache-keep
}

// errUsage marks an argument the flag package refused; it has already
// printed why, with the usage.
var errUsage = errors.New("usage")

// ParseFlags parses gantryd's arguments (without the program name) into
// m.Config on a FlagSet of its own, and checks them: the policy, the sizes,
// the dashboard's credentials (it reads --http-password-file), --tcp's
// address and TLS files. So a bad flag is refused before anything is opened
// or dialed; what needs a listener is Run's to refuse. It returns
// flag.ErrHelp for -h, an error wrapping errUsage for an argument the flag
// package refused, and otherwise an error naming the flag at fault.
func (m *Main) ParseFlags(ctx context.Context, args []string) error {
	// Named like flag.CommandLine, so that the usage reads as it always did.
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	c := &m.Config
	fs.StringVar(&c.Socket, "socket", api.DefaultSocket(), "unix socket to serve the API on")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "directory for the job records and logs")
	fs.StringVar(&c.DockerHost, "docker-host", "", "Docker engine address (default: DOCKER_HOST, else the local socket)")
	fs.StringVar(&c.BuildKitAddr, "buildkit-addr", "", "standalone buildkitd address (default: the Docker engine's embedded BuildKit); tcp:// needs --buildkit-tls-ca, --buildkit-tls-cert and --buildkit-tls-key")
	fs.StringVar(&c.BuildKitTLS.CA, "buildkit-tls-ca", "", "CA that signed the tcp:// buildkitd's certificate")
	fs.StringVar(&c.BuildKitTLS.Cert, "buildkit-tls-cert", "", "client certificate gantryd shows the tcp:// buildkitd")
	fs.StringVar(&c.BuildKitTLS.Key, "buildkit-tls-key", "", "key of --buildkit-tls-cert")
	fs.StringVar(&c.BuildCache, "build-cache", "", "registry reference builds import their cache from and export it to (every step), e.g. REGISTRY/gantry/cache:build; needs --buildkit-addr")
	fs.IntVar(&c.MaxJobs, "max-jobs", 2, "jobs running at once")
	fs.DurationVar(&c.StopTimeout, "stop-timeout", 10*time.Second, "grace period between SIGTERM and SIGKILL when a training container is stopped")
	blobCache := fs.String("blob-cache", "20g", "size the kept compressed image layers (DATA_DIR/blobs) may reach before the least recently used go (0: no limit)")
	fs.StringVar(&c.SocketGroup, "socket-group", "", "group that may use the socket (default: gantry when that group exists, else root only)")
	fs.StringVar(&c.TCP, "tcp", "", "also serve the API on this TCP address, with mutual TLS (--tlscacert, --tlscert, --tlskey)")
	fs.StringVar(&c.TLS.CA, "tlscacert", "", "CA whose client certificates the TCP listener trusts")
	fs.StringVar(&c.TLS.Cert, "tlscert", "", "the TCP listener's certificate")
	fs.StringVar(&c.TLS.Key, "tlskey", "", "the TCP listener's key")
	fs.IntVar(&c.MaxConns, "max-connections", 1024, "connections each API listener keeps open; at the limit a new one closes the longest idle, or is answered 503 when none is idle")
	fs.DurationVar(&c.OrphanGrace, "orphan-grace", time.Minute, "how long a container with gantryd's label but no job is left before it is removed")
	fs.BoolVar(&c.Debug, "debug", false, "log at debug level")
	fs.StringVar(&c.HTTP, "http", "", "serve the dashboard on this loopback address, e.g. 127.0.0.1:8080 (empty: no dashboard)")
	httpUser := fs.String("http-user", "", "user the dashboard asks for; with --http-password-file it also allows cancel (default: read-only, no login)")
	httpPass := fs.String("http-password-file", "", "file holding the password of --http-user")
	var pf policyFlags
	pf.register(fs)
	var bf backendFlags
	bf.register(fs)
	var wf webhookFlags
	wf.register(fs)
	var rf retentionFlags
	rf.register(fs)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return err
	} else if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see gantryd -h)", fs.Args())
	}
	var err error
	if c.Policy, err = pf.policy(); err != nil {
		return err
	}
	if err := bf.check(c); err != nil {
		return err
	}
	if err := wf.check(c); err != nil {
		return err
	}
	if err := rf.check(c); err != nil {
		return err
	}
	if c.BlobCache, err = gantry.ParseBytes(*blobCache); err != nil {
		return fmt.Errorf("--blob-cache: %w", err)
	}
	if c.Credentials, err = httpCredentials(c.HTTP, *httpUser, *httpPass); err != nil {
		return err
	}
	if err := checkBuildKit(c.BuildKitAddr, c.BuildKitTLS, c.BuildCache); err != nil {
		return err
	}
	if c.TCP != "" {
		// Refused here, before Run dials anything; Run's listenTCP checks again.
		return checkTCP(c.TCP, c.TLS)
	}
	return nil
}

// checkBuildKit refuses a tcp:// buildkitd without mutual TLS (whoever
// reaches it unauthenticated runs anything as root), TLS files without a
// buildkitd to use them, and a build cache on the engine's embedded
// BuildKit, which cannot export one to a registry.
func checkBuildKit(addr string, files builder.TLS, cache string) error {
	if strings.HasPrefix(addr, "tcp://") && (files.CA == "" || files.Cert == "" || files.Key == "") {
		return fmt.Errorf("--buildkit-addr %s: refusing to use a buildkitd over TCP without mutual TLS (anyone who can reach it would run anything as root): give --buildkit-tls-ca (the CA of buildkitd's certificate), --buildkit-tls-cert and --buildkit-tls-key (a client certificate buildkitd's --tlscacert signed)", addr)
	}
	if addr == "" && !files.IsZero() {
		return fmt.Errorf("--buildkit-tls-ca, --buildkit-tls-cert and --buildkit-tls-key need --buildkit-addr")
	}
	if addr == "" && cache != "" {
		return fmt.Errorf("--build-cache %s: the Docker engine's embedded BuildKit cannot export a registry cache; use it with --buildkit-addr", cache)
	}
	return nil
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
