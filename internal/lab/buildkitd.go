package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/buildkit/client"
)

// buildkitModule is the module whose cmd/buildkitd BuildKitdBinary builds.
const buildkitModule = "github.com/moby/buildkit"

// fallbackBuildKitVersion is go.mod's BuildKit, for a binary built without
// module information.
const fallbackBuildKitVersion = "v0.34.2"

// buildkitCacheDir is where the buildkitd binary is kept:
// GANTRY_LAB_CACHE, else /var/cache/gantry-lab.
func buildkitCacheDir() string {
	if d := os.Getenv("GANTRY_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/gantry-lab"
}

// buildkitVersion is the BuildKit this binary was built with (go.mod's).
func buildkitVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == buildkitModule {
				if m.Replace != nil {
					return m.Replace.Version
				}
				return m.Version
			}
		}
	}
	return fallbackBuildKitVersion
}

// BuildKitdBinary returns the path of a buildkitd built from the Go module
// proxy at go.mod's BuildKit version. The first call on a machine builds it
// (about 4 minutes on 2 CPUs) into buildkitCacheDir(); later calls, from any
// process, find it there. Concurrent callers wait for one build.
func BuildKitdBinary(ctx context.Context) (string, error) {
	v := buildkitVersion()
	dir := buildkitCacheDir()
	bin := filepath.Join(dir, "buildkitd-"+v)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab cache: %w", err)
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("lab cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another process built it while we waited
	}
	if err := buildBuildKitd(ctx, v, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// buildBuildKitd builds cmd/buildkitd at version v into bin, in a throwaway
// module that requires BuildKit at v, so that buildkitd gets the
// dependencies BuildKit's own go.mod asks for.
func buildBuildKitd(ctx context.Context, v, bin string) error {
	mod, err := os.MkdirTemp("", "gantry-buildkitd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(mod)
	tmp := bin + ".tmp"
	steps := [][]string{
		{"go", "mod", "init", "gantry.lab/buildkitd"},
		{"go", "get", buildkitModule + "@" + v},
		{"go", "build", "-trimpath", "-o", tmp,
			"-ldflags", "-X " + buildkitModule + "/version.Version=" + v,
			buildkitModule + "/cmd/buildkitd"},
	}
	for _, s := range steps {
		cmd := exec.CommandContext(ctx, s[0], s[1:]...)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("build buildkitd %s: %s: %w\n%s", v, strings.Join(s, " "), err, out)
		}
	}
	return os.Rename(tmp, bin)
}

// BuildKitOptions says how StartBuildKit runs buildkitd.
type BuildKitOptions struct {
	// InsecureRegistries are the registries buildkitd reaches over plain
	// HTTP, as HOST:PORT ("127.0.0.1:5000").
	InsecureRegistries []string
	// Log receives buildkitd's own log; nil discards it.
	Log io.Writer
}

// BuildKit is a standalone, rootful buildkitd with the OCI worker (runc),
// serving gRPC on a loopback TCP port with mutual TLS.
type BuildKit struct {
	// Addr is where it serves: tcp://127.0.0.1:PORT.
	Addr string
	// CACert, Cert and Key are the client's mutual-TLS files: the CA that
	// signed buildkitd's certificate (for 127.0.0.1), and a client
	// certificate and key that it accepts.
	CACert, Cert, Key string
	// Root is its state directory.
	Root string

	dir    string // certificates, config, and Root
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how the process ended, once exited is closed
}

// StartBuildKit builds buildkitd if needed (BuildKitdBinary), starts it
// with a fresh, empty state directory, and returns once it answers a
// client over mutual TLS. Close stops it and removes everything it made.
func StartBuildKit(ctx context.Context, o BuildKitOptions) (*BuildKit, error) {
	bin, err := BuildKitdBinary(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gantry-lab-buildkitd-")
	if err != nil {
		return nil, err
	}
	b := &BuildKit{dir: dir, Root: filepath.Join(dir, "root"), exited: make(chan struct{})}
	if err := b.start(ctx, bin, o); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (b *BuildKit) start(ctx context.Context, bin string, o BuildKitOptions) error {
	server, cli, err := mtlsFiles(b.dir)
	if err != nil {
		return err
	}
	b.CACert, b.Cert, b.Key = cli.CA, cli.Cert, cli.Key
	port, err := buildkitPort()
	if err != nil {
		return err
	}
	b.Addr = "tcp://127.0.0.1:" + strconv.Itoa(port)
	config := filepath.Join(b.dir, "buildkitd.toml")
	if err := os.WriteFile(config, buildkitdConfig(o.InsecureRegistries), 0o644); err != nil {
		return err
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	b.cmd = exec.Command(bin,
		"--addr", b.Addr,
		"--tlscacert", server.CA, "--tlscert", server.Cert, "--tlskey", server.Key,
		"--root", b.Root, "--config", config,
		"--oci-worker=true", "--containerd-worker=false")
	b.cmd.Stdout, b.cmd.Stderr = log, log
	// buildkitd dies with the test or benchmark that started it.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		close(b.exited)
		return fmt.Errorf("start buildkitd: %w", err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.exited)
	}()
	return b.waitReady(ctx)
}

// buildkitdConfig is buildkitd.toml: the OCI worker only, and plain HTTP
// for the insecure registries.
func buildkitdConfig(insecure []string) []byte {
	var c bytes.Buffer
	c.WriteString("[worker.oci]\n  enabled = true\n[worker.containerd]\n  enabled = false\n")
	for _, h := range insecure {
		fmt.Fprintf(&c, "[registry.%q]\n  http = true\n", h)
	}
	return c.Bytes()
}

// waitReady polls buildkitd (ListWorkers over mutual TLS) until it answers
// with a worker, it exits, or a minute passes: it announces readiness no
// other way.
func (b *BuildKit) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ws, err := b.listWorkers(ctx)
		if err == nil && len(ws) > 0 {
			return nil
		}
		if err == nil {
			err = errors.New("no workers")
		}
		last = err
		select {
		case <-b.exited:
			return fmt.Errorf("buildkitd exited before it answered (%v): %w", b.err, last)
		case <-ctx.Done():
			return fmt.Errorf("buildkitd at %s did not answer: %w", b.Addr, errors.Join(ctx.Err(), last))
		case <-tick.C:
		}
	}
}

func (b *BuildKit) listWorkers(ctx context.Context) ([]*client.WorkerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.New(ctx, b.Addr,
		client.WithServerConfig("127.0.0.1", b.CACert),
		client.WithCredentials(b.Cert, b.Key))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ListWorkers(ctx)
}

// Close stops buildkitd (SIGTERM, then SIGKILL after 30 seconds) and
// removes its state directory, certificates and config.
func (b *BuildKit) Close() error {
	var errs []error
	if b.cmd != nil && b.cmd.Process != nil {
		select {
		case <-b.exited:
		default:
			b.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-b.exited:
			case <-time.After(30 * time.Second):
				b.cmd.Process.Kill()
				<-b.exited
				errs = append(errs, errors.New("buildkitd ignored SIGTERM for 30s; killed"))
			}
		}
	}
	if err := os.RemoveAll(b.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove buildkitd state: %w", err))
	}
	return errors.Join(errs...)
}

// buildkitPort is a loopback TCP port nothing listens on now.
func buildkitPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
