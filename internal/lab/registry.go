package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// RegistryConfig is the configuration of Debian's docker-registry
// (distribution 2.8) serving on addr from storage, without auth, with
// deletes allowed; extra (YAML, top level: an auth: section) is appended.
// The lab's registry, the benchmark's and the tests' use it.
func RegistryConfig(storage, addr, extra string) []byte {
	return fmt.Appendf(nil, `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, storage, addr, extra)
}

// startRegistry runs docker-registry inside the bridge namespace, listening
// on registryAddr, and waits until the host can reach it.
func startRegistry(ctx context.Context, n netNames, storage string) (*process, error) {
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(n.runDir(), "registry.yml")
	if err := os.WriteFile(cfg, RegistryConfig(storage, registryAddr, ""), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", "--net="+nsPath(n.bridgeNS()), "docker-registry", "serve", cfg)
	p, err := start("registry", cmd, filepath.Join(n.runDir(), "registry.log"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := awaitRegistry(ctx, p, registryAddr, http.StatusOK); err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// awaitRegistry waits until the docker-registry p, serving on addr, answers
// /v2/ with the status want (it announces readiness no other way), until
// ctx ends. Another status, or p's exit, is an error at once.
func awaitRegistry(ctx context.Context, p *process, addr string, want int) error {
	hc := &http.Client{Transport: labTransport(), Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			return fmt.Errorf("registry at %s answered /v2/ with %s, want %d: %s", addr, resp.Status, want, p.logTail())
		}
		select {
		case <-p.exited:
			return gantry.Errorf(gantry.ErrUnavailable, "registry exited while starting: %s", p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("registry at %s not answering: %w (%v)", addr, gantry.ErrUnavailable, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LocalRegistry is a docker-registry a test runs on the host's loopback.
type LocalRegistry struct {
	Addr string // host:port
	p    *process
}

// StartLocalRegistry runs docker-registry on a free loopback port, its
// configuration, log and storage under dir, with extra configuration
// (RegistryConfig's: an auth: section), and returns once /v2/ answers with
// the status want (401 for a registry with auth), or an error when ctx
// ends first. Close stops it.
func StartLocalRegistry(ctx context.Context, dir, extra string, want int) (*LocalRegistry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, RegistryConfig(filepath.Join(dir, "storage"), addr, extra), 0o600); err != nil {
		return nil, err
	}
	p, err := start("docker-registry", exec.Command("docker-registry", "serve", cfg), filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	if err := awaitRegistry(ctx, p, addr, want); err != nil {
		_ = p.stop(5 * time.Second)
		return nil, err
	}
	return &LocalRegistry{Addr: addr, p: p}, nil
}

// Close stops the registry and waits for its exit.
func (r *LocalRegistry) Close() { _ = r.p.stop(5 * time.Second) }

// Log is the end of the registry's log.
func (r *LocalRegistry) Log() string { return r.p.logTail() }

// labTransport talks to the lab's registry directly, never through a proxy
// the environment may name.
func labTransport() http.RoundTripper {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 8,
	}
}

// labRef is where host image ref lives in the lab registry: the same
// repository path and tag (or digest), under registryAddr.
func labRef(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", gantry.Errorf(gantry.ErrInvalid, "image %q: %v", ref, err)
	}
	return registryAddr + "/" + r.Context().RepositoryStr() + sep(r) + r.Identifier(), nil
}

func sep(r name.Reference) string {
	if _, ok := r.(name.Digest); ok {
		return "@"
	}
	return ":"
}

// pushImages copies each host image into the lab registry unless the
// registry already holds it with the same config (image ID): the base image
// is about 1 GB, pushed once per machine, not once per run.
func pushImages(ctx context.Context, refs []string, logf func(string, ...any)) error {
	if len(refs) == 0 {
		return nil
	}
	host, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("dial the host engine: %w", err)
	}
	defer host.Close()
	for _, ref := range refs {
		if err := pushImage(ctx, host, ref, logf); err != nil {
			return err
		}
	}
	return nil
}

func pushImage(ctx context.Context, host *client.Client, ref string, logf func(string, ...any)) error {
	src, err := name.ParseReference(ref)
	if err != nil {
		return gantry.Errorf(gantry.ErrInvalid, "image %q: %v", ref, err)
	}
	target, err := labRef(ref)
	if err != nil {
		return err
	}
	dst, err := name.ParseReference(target, name.Insecure)
	if err != nil {
		return err
	}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	inspect, err := host.ImageInspect(ictx, ref)
	cancel()
	if err != nil {
		return fmt.Errorf("image %s on the host engine: %w", ref, err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(labTransport())}
	if have, err := remoteConfig(dst, ropts); err == nil && have.String() == inspect.ID {
		logf("lab: %s already in the lab registry", target)
		return nil
	}
	start := time.Now()
	img, err := daemon.Image(src, daemon.WithClient(host), daemon.WithContext(ctx), daemon.WithFileBufferedOpener())
	if err != nil {
		return fmt.Errorf("read %s from the host engine: %w", ref, err)
	}
	if err := remote.Write(dst, img, ropts...); err != nil {
		return fmt.Errorf("push %s: %w", target, err)
	}
	logf("lab: pushed %s in %s", target, time.Since(start).Round(time.Millisecond))
	return nil
}

// remoteConfig is the config digest (the image ID) of the image at ref.
func remoteConfig(ref name.Reference, opts []remote.Option) (v1.Hash, error) {
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	return img.ConfigName()
}

// discard is a Log that writes nowhere.
var discard io.Writer = io.Discard
