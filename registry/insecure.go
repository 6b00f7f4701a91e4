package registry

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/gantry-ml/gantry"
)

// go-containerregistry speaks plain HTTP to a registry whose name looks
// private (RFC 1918 addresses, localhost, *.localhost) when HTTPS fails: a
// man in the middle who drops TLS then reads the credentials. gantryd speaks
// plain HTTP only to loopback registries and to those the operator lists
// (--insecure-registry), and a guarding transport under go-containerregistry
// refuses every other plain-HTTP request before it dials.

// Registries is a list of registries (HOST[:PORT]) that may be spoken to over
// plain HTTP. It is a flag.Value: Set checks and appends one registry, so a
// repeated flag (gantryd --insecure-registry) fills it.
type Registries []string

// String returns the registries, comma-separated.
func (r *Registries) String() string { return strings.Join(*r, ",") }

// Set appends the registry s (HOST[:PORT], no scheme or path). It returns
// ErrInvalid when s is not a registry name.
func (r *Registries) Set(s string) error {
	reg, err := parseRegistry(s)
	if err != nil {
		return err
	}
	*r = append(*r, reg)
	return nil
}

func parseRegistry(s string) (string, error) {
	reg, err := name.NewRegistry(s, name.StrictValidation)
	if err != nil || strings.Contains(s, "/") {
		return "", gantry.Errorf(gantry.ErrInvalid, "insecure registry %q: want HOST[:PORT], as in image references (no http:// and no path)", s)
	}
	return strings.ToLower(reg.RegistryStr()), nil
}

// WithInsecureRegistries lets the Pusher speak plain HTTP to each registry
// (HOST[:PORT], as in image references) in regs, besides loopback ones.
// Entries that are not registry names allow nothing; check them first with
// Registries.Set.
func WithInsecureRegistries(regs []string) Option {
	return func(p *Pusher) {
		for _, s := range regs {
			if reg, err := parseRegistry(s); err == nil {
				p.insecure[reg] = true
			}
		}
	}
}

// plainHTTPOK reports whether the registry host (HOST[:PORT], as in a
// reference or a URL) may be spoken to over plain HTTP: it is loopback
// (127.0.0.0/8, ::1 or localhost) or the operator listed it.
func (p *Pusher) plainHTTPOK(host string) bool {
	host = strings.ToLower(host)
	if p.insecure[host] {
		return true
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ref parses s as ParseRef does, and marks a registry that may be spoken to
// over plain HTTP insecure, so that go-containerregistry falls back to HTTP
// for it (for 127.0.0.2 or a listed name it would not). Every other
// registry is left as go-containerregistry reads it; the guard refuses its
// fallback.
func (p *Pusher) ref(s string) (name.Tag, error) {
	t, err := gantry.ParseRef(s)
	if err != nil || !p.plainHTTPOK(t.RegistryStr()) {
		return t, err
	}
	reg, err := name.NewRegistry(t.RegistryStr(), name.Insecure)
	if err != nil {
		return name.Tag{}, gantry.Errorf(gantry.ErrInvalid, "%q: %v", s, err)
	}
	return reg.Repo(t.RepositoryStr()).Tag(t.TagStr()), nil
}

// plainHTTPGuard refuses, before dialling, a request in plain HTTP (or any
// scheme but https) to a host that may not be spoken to so.
type plainHTTPGuard struct {
	p     *Pusher
	inner http.RoundTripper
}

func (g plainHTTPGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !g.p.plainHTTPOK(r.URL.Host) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("gantryd refused to send plain HTTP to %s", r.URL.Host)
	}
	return g.inner.RoundTrip(r)
}

// plainHTTPRefused says why a push to t failed, when go-containerregistry
// would have fallen back to plain HTTP for t's registry and the guard
// refused it: the registry did not answer over HTTPS.
func (p *Pusher) plainHTTPRefused(t name.Tag) bool {
	return t.Registry.Scheme() == "http" && !p.plainHTTPOK(t.RegistryStr())
}
