package main

import (
	"strings"
	"testing"

	"github.com/gantry-ml/gantry/api"
)

// The TCP listener speaks mutual TLS only, on loopback too: without the
// three files gantryd says what to give and does not listen.
func TestListenTCPNeedsMutualTLS(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		files api.TLSFiles
		say   string
	}{
		{"127.0.0.1:0", api.TLSFiles{}, "--tlscacert"},
		{"localhost:0", api.TLSFiles{}, "without TLS"},
		{"[::1]:0", api.TLSFiles{}, "--tlskey"},
		{"0.0.0.0:0", api.TLSFiles{}, "without TLS"},
		{"127.0.0.1:0", api.TLSFiles{Cert: "c.pem", Key: "k.pem"}, "--tlscacert"},
		{"127.0.0.1:0", api.TLSFiles{CA: "ca.pem"}, "--tlscert"},
		{"8080", api.TLSFiles{}, "want HOST:PORT"},
	} {
		ln, err := listenTCP(tc.addr, tc.files, 8)
		if ln != nil {
			ln.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("listenTCP(%q, %+v): %v; want refused, saying %q", tc.addr, tc.files, err, tc.say)
		}
	}
}
