package main

import (
	"context"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry/builder"
)

// A tcp:// buildkitd needs mutual TLS, TLS files need a buildkitd, and the
// registry build cache needs a standalone buildkitd: refused before
// anything is dialed, naming the flags to give.
func TestParseFlagsBuildKit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		say  string // part of the error
	}{
		{[]string{"--buildkit-addr", "tcp://10.0.0.5:1234"}, "--buildkit-tls-ca"},
		{[]string{"--buildkit-addr", "tcp://10.0.0.5:1234", "--buildkit-tls-ca", "ca.pem", "--buildkit-tls-cert", "c.pem"}, "without mutual TLS"},
		{[]string{"--buildkit-tls-ca", "ca.pem"}, "need --buildkit-addr"},
		{[]string{"--build-cache", "127.0.0.1:5000/gantry/cache:build"}, "embedded BuildKit"},
	} {
		err := NewMain().ParseFlags(context.Background(), tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("ParseFlags(%q): %v; want an error saying %q", tc.args, err, tc.say)
		}
	}
	m := parsed(t, "--buildkit-addr", "tcp://10.0.0.5:1234", "--buildkit-tls-ca", "ca.pem",
		"--buildkit-tls-cert", "c.pem", "--buildkit-tls-key", "k.pem", "--build-cache", "10.0.0.5:5000/gantry/cache:build")
	want := builder.TLS{CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}
	if c := m.Config; c.BuildKitTLS != want || c.BuildCache != "10.0.0.5:5000/gantry/cache:build" {
		t.Errorf("Config TLS %+v, cache %q; want %+v and the cache", c.BuildKitTLS, c.BuildCache, want)
	}
	// A unix socket is only root's to reach: no TLS needed.
	parsed(t, "--buildkit-addr", "unix:///run/buildkit/buildkitd.sock", "--build-cache", "r/c:b")
}
