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
// The lab's registry, the benchmark's and the builder tests' use it.
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
	hc := &http.Client{Transport: labTransport(), Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get("http://" + registryAddr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.exited:
			return nil, gantry.Errorf(gantry.ErrUnavailable, "registry exited while starting: %s", p.logTail())
		case <-ctx.Done():
			_ = p.stop(5 * time.Second)
			return nil, fmt.Errorf("registry at %s not answering: %w (%v)", registryAddr, gantry.ErrUnavailable, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

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
