package main

// Where training runs: the local engine, or a Docker Swarm.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/registry"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/swarm"
)

// backendFlags are the flags that choose where training runs.
type backendFlags struct {
	backend string
	stage   string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.backend, "backend", gantry.BackendLocal, "where training runs: local (the Docker engine, --docker-host) or swarm (a one-replica service on the Docker Swarm whose manager --docker-host names)")
	fs.StringVar(&b.stage, "staging-repo", "", "repository the built image is pushed to, by digest, for the swarm's nodes to pull (needed with --backend swarm), e.g. registry.example:5000/gantry/staging")
}

// check fills c from the flags: the policy names the backend.
func (b *backendFlags) check(c *Config) error {
	switch b.backend {
	case gantry.BackendLocal, gantry.BackendSwarm:
	default:
		return fmt.Errorf("--backend %q: want local or swarm", b.backend)
	}
	if b.stage != "" {
		if _, err := name.NewRepository(b.stage, name.StrictValidation); err != nil {
			return fmt.Errorf("--staging-repo %q: want a repository like registry.example:5000/gantry/staging: %v", b.stage, err)
		}
	}
	if b.backend == gantry.BackendSwarm && b.stage == "" {
		return fmt.Errorf("--backend swarm needs --staging-repo: the swarm's nodes pull the image from a registry")
	}
	c.Policy.Backend, c.Stage = b.backend, b.stage
	return nil
}

// stagedSource reads an image for a push: a digest reference (an image a
// build or the staging step pushed to the staging repository) from its
// registry, anything else from the engine through local.
func stagedSource(p *registry.Pusher, local func(context.Context, string) (v1.Image, error)) func(context.Context, string) (v1.Image, error) {
	return func(ctx context.Context, ref string) (v1.Image, error) {
		if _, err := name.NewDigest(ref, name.StrictValidation); err == nil {
			return p.Image(ctx, ref)
		}
		return local(ctx, ref)
	}
}

// dialBackend sets where training runs: the engine itself, or the swarm
// whose manager it is (--backend swarm).
func (m *Main) dialBackend(ctx context.Context) error {
	if m.Config.Policy.Backend != gantry.BackendSwarm {
		m.backend = m.engine
		return nil
	}
	sw, err := swarm.Dial(ctx, swarm.Options{Host: m.Config.DockerHost, RegistryAuth: nodeAuth})
	if err != nil {
		return err
	}
	m.backend, m.closeBackend = swarmEngine{sw, m.engine}, sw.Close
	return nil
}

// swarmEngine trains on a swarm; the images a build made are the engine's.
type swarmEngine struct {
	*swarm.Backend
	engine *runner.Engine
}

func (s swarmEngine) ImageID(ctx context.Context, ref string) (string, error) {
	return s.engine.ImageID(ctx, ref)
}

func (s swarmEngine) RemoveImage(ctx context.Context, ref string) error {
	return s.engine.RemoveImage(ctx, ref)
}

// nodeAuth is the registry credential a swarm's nodes pull image with:
// gantryd's own for the image's registry (its docker config, as a push
// uses), encoded as the engine takes it. An anonymous registry gets none.
func nodeAuth(image string) (string, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return "", gantry.Errorf(gantry.ErrInvalid, "image %q: %v", image, err)
	}
	a, err := authn.DefaultKeychain.Resolve(ref.Context())
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", ref.Context().RegistryStr(), err)
	}
	if a == authn.Anonymous {
		return "", nil
	}
	c, err := a.Authorization()
	if err != nil {
		return "", fmt.Errorf("credentials for %s: %w", ref.Context().RegistryStr(), err)
	}
	js, err := json.Marshal(map[string]string{
		"username": c.Username, "password": c.Password, "identitytoken": c.IdentityToken,
		"registrytoken": c.RegistryToken, "serveraddress": ref.Context().RegistryStr(),
	})
	if err != nil {
		return "", err
	}
	return base64.URLEncoding.EncodeToString(js), nil
}
