package registry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/gantry-ml/gantry"
)

// hostRecorder is an in-process registry that records the Host of every
// HTTP request it is sent.
type hostRecorder struct {
	inner http.Handler
	mu    sync.Mutex
	hosts map[string]int
}

func (h *hostRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.hosts[r.Host]++
	h.mu.Unlock()
	h.inner.ServeHTTP(w, r)
}

func (h *hostRecorder) requests(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hosts[host]
}

// divertedTransport returns a plain-HTTP in-process registry on a loopback
// listener, and a transport that takes every connection, whatever address
// it is for, to that listener: nothing is ever sent to another address.
func divertedTransport(t *testing.T) (*hostRecorder, string, http.RoundTripper) {
	t.Helper()
	rec := &hostRecorder{inner: innerRegistry(), hosts: map[string]int{}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return rec, addr, tr
}

func TestPushSpeaksPlainHTTPOnlyToLoopbackAndListedRegistries(t *testing.T) {
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		insecure []string
		registry string // "" is the in-process registry's own loopback address
		wantOK   bool
	}{
		{"private address, not listed", nil, "10.1.2.3:5000", false},
		{"private address without a port, not listed", nil, "192.168.7.7", false},
		{"private address, another one listed", []string{"10.1.2.3:5000"}, "192.168.7.7", false},
		{"same host, another port listed", []string{"10.1.2.3:5001"}, "10.1.2.3:5000", false},
		{"localhost name without a port", nil, "registry.localhost", false},
		{"private address, listed", []string{"10.1.2.3:5000"}, "10.1.2.3:5000", true},
		{"public name, listed", []string{"registry.example.com"}, "registry.example.com", true},
		{"loopback", nil, "", true},
		{"loopback, others listed", []string{"10.1.2.3:5000"}, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, addr, tr := divertedTransport(t)
			reg := c.registry
			if reg == "" {
				reg = addr
			}
			p := New(WithKeychain(authn.NewMultiKeychain()), WithTransport(tr), WithInsecureRegistries(c.insecure))
			_, err := p.Push(context.Background(), img, []string{reg + "/repo:tag"}, gantry.Discard)
			got := rec.requests(reg)
			if !c.wantOK {
				if err == nil {
					t.Fatalf("push to %s succeeded over plain HTTP (%d requests); want it refused", reg, got)
				}
				for _, want := range []string{"registry " + reg + " did not answer over HTTPS", "--insecure-registry " + reg} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q; want it to say %q", err, want)
					}
				}
				if got != 0 {
					t.Errorf("the registry got %d plain-HTTP requests for %s; want 0", got, reg)
				}
				return
			}
			if err != nil {
				t.Fatalf("push to %s: %v", reg, err)
			}
			if got == 0 {
				t.Errorf("the registry got no request for %s; want the push there", reg)
			}
		})
	}
}

func TestRegistriesFlag(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"10.0.0.5:5000", "10.0.0.5:5000", true},
		{"Registry.Example.com", "registry.example.com", true},
		{"[fd00::1]:5000", "[fd00::1]:5000", true},
		{"http://10.0.0.5:5000", "", false},
		{"10.0.0.5:5000/repo", "", false},
		{"", "", false},
		{"bad host", "", false},
	}
	for _, c := range cases {
		var r Registries
		err := r.Set(c.in)
		if (err == nil) != c.ok {
			t.Errorf("Set(%q) error = %v; want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Errorf("Set(%q) error %v is not ErrInvalid", c.in, err)
			}
			continue
		}
		if r.String() != c.want {
			t.Errorf("Set(%q) gives %q; want %q", c.in, r.String(), c.want)
		}
	}
}

func TestPlainHTTPOK(t *testing.T) {
	p := New(WithInsecureRegistries([]string{"10.0.0.5:5000", "reg.corp"}))
	cases := []struct {
		host string
		want bool
	}{
		{"127.0.0.1:5000", true},
		{"127.0.0.2", true},
		{"[::1]:5000", true},
		{"localhost:5000", true},
		{"localhost", true},
		{"LOCALHOST:5000", true},
		{"10.0.0.5:5000", true},
		{"reg.corp", true},
		{"REG.corp", true},
		{"10.0.0.5", false},
		{"10.0.0.5:5001", false},
		{"reg.corp:5000", false},
		{"192.168.1.1:5000", false},
		{"foo.local:5000", false},
		{"foo.localhost:5000", false},
		{"[::ffff:10.0.0.5]:5000", false},
		{"0.0.0.0:5000", false},
	}
	for _, c := range cases {
		if got := p.plainHTTPOK(c.host); got != c.want {
			t.Errorf("plainHTTPOK(%q) = %v; want %v", c.host, got, c.want)
		}
	}
}
