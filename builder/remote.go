package builder

import (
	"net/url"
	"os"

	"github.com/docker/cli/cli/config"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"

	"github.com/gantry-ml/gantry"
)

// TLS are the PEM files of a mutual-TLS connection to a standalone
// buildkitd (buildkitd --tlscacert, --tlscert, --tlskey on its side): the
// CA that signed buildkitd's certificate, and the client's certificate and
// key, which buildkitd's CA must have signed.
type TLS struct {
	CA, Cert, Key string
}

// IsZero says whether no TLS file is given.
func (t TLS) IsZero() bool { return t == TLS{} }

// clientOpts are the BuildKit client's options for addr with t. A tcp://
// address needs all three files; the server's certificate must name addr's
// host.
func (t TLS) clientOpts(addr string) ([]client.ClientOpt, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "buildkit address %q: %v", addr, err)
	}
	if t.IsZero() {
		if u.Scheme == "tcp" {
			return nil, gantry.Errorf(gantry.ErrInvalid, "buildkit address %s: refusing to use a buildkitd over TCP without mutual TLS (anyone who reaches it runs anything as root): give the CA, client certificate and key", addr)
		}
		return nil, nil
	}
	if t.CA == "" || t.Cert == "" || t.Key == "" {
		return nil, gantry.Errorf(gantry.ErrInvalid, "buildkit TLS: give all of the CA, the client certificate and the key")
	}
	for _, f := range []string{t.CA, t.Cert, t.Key} {
		if _, err := os.Stat(f); err != nil {
			return nil, gantry.Errorf(gantry.ErrInvalid, "buildkit TLS: %v", err)
		}
	}
	return []client.ClientOpt{
		client.WithServerConfig(u.Hostname(), t.CA),
		client.WithCredentials(t.Cert, t.Key),
	}, nil
}

// registryAuth gives BuildKit the user's registry credentials, from the
// docker CLI's config (DOCKER_CONFIG, else ~/.docker/config.json, with its
// credential helpers), for pulling bases, pushing and the registry cache.
// It is read at every build, so a new docker login counts.
func registryAuth() (session.Attachable, error) {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		dir = config.Dir()
	}
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "registry credentials: docker config in %s: %v", dir, err)
	}
	return authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
		AuthConfigProvider: authprovider.LoadAuthConfig(cfg),
	}), nil
}
