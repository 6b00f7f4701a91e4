package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The hub box is Docker Hub on this machine, for the engine, the docker CLI
// and gantryd alike: Debian's docker-registry with token authentication,
// behind a TLS front on 127.0.0.1:443 that answers to Docker Hub's names
// (a certificate from a test CA) and plays auth.docker.io itself
// (hubtoken_test.go). /etc/hosts sends the names to 127.0.0.1; the test CA
// is trusted by the system store (Go, the docker CLI) and by the engine
// (/etc/docker/certs.d). Everything it changes on the machine is restored
// when the test ends, failed or not, and a crashed run's leftovers are
// removed when the next one starts.
//
// The engine loads the system CA pool once, at its first TLS connection, so
// the test CA is made once and kept (hubBoxCADir), never minted per run.
const (
	hubBoxMark    = "# gantry-hubbox"
	hubBoxCADir   = "/var/lib/gantry-test/hubbox"
	hubBoxCAStore = "/usr/local/share/ca-certificates/gantry-hubbox-ca.crt"
	hubBoxCertsD  = "/etc/docker/certs.d"
	hubBoxHosts   = "/etc/hosts"
	hubService    = "registry.docker.io"
	hubIssuer     = "gantry-hubbox"
	hubAuthName   = "auth.docker.io"
)

// hubBoxRegistryNames are the names the box's registry answers to.
var hubBoxRegistryNames = []string{"index.docker.io", "registry-1.docker.io", "docker.io"}

// hubBoxBusy holds while a hub box runs: there is one at a time. Tests using
// it do not run in parallel, so they are done before the parallel tests
// (TestDockerHubStyleReference's proxied fake hub) start.
var hubBoxBusy sync.Mutex

// hubBox is one running hub box.
type hubBox struct {
	t       *testing.T
	roots   *x509.CertPool // the test CA
	users   map[string]string
	regAddr string // docker-registry's own plain-HTTP address
	client  *http.Transport

	signKey  *ecdsa.PrivateKey // signs the tokens
	signCert []byte            // its certificate (DER), from the test CA

	limit   atomic.Int64 // manifest PUTs still to answer with 429
	limited atomic.Int64 // 429s answered

	mu     sync.Mutex
	grants []string // "user scope -> granted actions", for failure logs
}

// startHubBox starts a hub box where users (name: password) may log in.
func startHubBox(t *testing.T, users map[string]string) *hubBox {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the hub box changes /etc/hosts and the CA store: run the integration tests as root")
	}
	if !hubBoxBusy.TryLock() {
		t.Fatal("a hub box is running already; tests using it must not run in parallel")
	}
	t.Cleanup(hubBoxBusy.Unlock)
	ln, err := net.Listen("tcp", "127.0.0.1:443")
	if err != nil {
		t.Fatalf("the hub box needs 127.0.0.1:443: %v", err)
	}
	if err := cleanHubBoxLeftovers(); err != nil {
		ln.Close()
		t.Fatalf("removing an earlier hub box's leftovers: %v", err)
	}
	caCert, caKey, caPEM := hubBoxCA(t)
	b := &hubBox{t: t, roots: x509.NewCertPool(), users: users}
	b.roots.AddCert(caCert)
	b.signKey, b.signCert = issueCert(t, caCert, caKey, "gantry-hubbox token signer", nil, x509.ExtKeyUsageAny)
	bundle := filepath.Join(t.TempDir(), "token-ca.pem")
	if err := os.WriteFile(bundle, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	b.startRegistry(t, bundle)
	key, der := issueCert(t, caCert, caKey, "index.docker.io", append([]string{hubAuthName}, hubBoxRegistryNames...), x509.ExtKeyUsageServerAuth)
	b.serve(t, ln, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	b.client = &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: b.roots},
		// The test's own requests go to the box, whatever the resolver says.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:443")
		},
	}
	t.Cleanup(b.client.CloseIdleConnections)
	installHubBox(t, caPEM)
	t.Cleanup(func() {
		if t.Failed() {
			b.mu.Lock()
			t.Logf("hub box token grants:\n%s", strings.Join(b.grants, "\n"))
			b.mu.Unlock()
		}
	})
	return b
}

// rateLimit makes the box answer the next n manifest PUTs with 429 and
// Retry-After: 1.
func (b *hubBox) rateLimit(n int64) { b.limit.Store(n) }

// startRegistry runs docker-registry on a free loopback port, with token
// authentication trusting tokens signed under bundle's CA.
func (b *hubBox) startRegistry(t *testing.T, bundle string) {
	t.Helper()
	auth := fmt.Sprintf("  relativeurls: true\nauth:\n  token:\n    realm: https://%s/token\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
		hubAuthName, hubService, hubIssuer, bundle)
	b.regAddr = runRegistry(t, t.TempDir(), auth, http.StatusUnauthorized)
}

// serve runs the TLS front on ln: auth.docker.io's /token is answered here,
// Docker Hub's registry names go to docker-registry (unless rate limited),
// any other name is refused.
func (b *hubBox) serve(t *testing.T, ln net.Listener, cert tls.Certificate) {
	target := &url.URL{Scheme: "http", Host: b.regAddr}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host := strings.ToLower(r.Host)
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			switch {
			case host == hubAuthName && r.URL.Path == "/token":
				b.serveToken(w, r)
			case slices.Contains(hubBoxRegistryNames, host):
				if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") && b.limit.Add(-1) >= 0 {
					b.limited.Add(1)
					w.Header().Set("Retry-After", "1")
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusTooManyRequests)
					io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}`)
					return
				}
				proxy.ServeHTTP(w, r)
			default:
				http.Error(w, "the hub box answers to Docker Hub's names alone", http.StatusMisdirectedRequest)
			}
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
}

// hubBoxCA returns the test CA, made on first use and kept in hubBoxCADir.
func hubBoxCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	certFile, keyFile := filepath.Join(hubBoxCADir, "ca.crt"), filepath.Join(hubBoxCADir, "ca.key")
	certPEM, err1 := os.ReadFile(certFile)
	keyPEM, err2 := os.ReadFile(keyFile)
	if err1 == nil && err2 == nil {
		cb, _ := pem.Decode(certPEM)
		kb, _ := pem.Decode(keyPEM)
		if cb != nil && kb != nil {
			cert, err := x509.ParseCertificate(cb.Bytes)
			key, kerr := x509.ParseECPrivateKey(kb.Bytes)
			if err == nil && kerr == nil && time.Now().Before(cert.NotAfter) {
				return cert, key, certPEM
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gantry hub box test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.MkdirAll(hubBoxCADir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return cert, key, certPEM
}

// issueCert issues a certificate from the CA for names (a server
// certificate) or for signing (names nil), and returns its key and DER.
func issueCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, names []string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// installHubBox makes the machine send Docker Hub's names to 127.0.0.1 and
// trust the test CA, and restores both when the test ends.
func installHubBox(t *testing.T, caPEM []byte) {
	t.Helper()
	hosts, err := os.ReadFile(hubBoxHosts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// In place, byte for byte: /etc/hosts may be a bind mount.
		if err := os.WriteFile(hubBoxHosts, hosts, 0o644); err != nil {
			t.Errorf("restore %s: %v", hubBoxHosts, err)
		}
	})
	var add bytes.Buffer
	if len(hosts) > 0 && !bytes.HasSuffix(hosts, []byte("\n")) {
		add.WriteString("\n")
	}
	for _, n := range append([]string{hubAuthName}, hubBoxRegistryNames...) {
		fmt.Fprintf(&add, "127.0.0.1 %s %s\n", n, hubBoxMark)
	}
	if err := os.WriteFile(hubBoxHosts, append(slices.Clip(hosts), add.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		if err := removeHubBoxCA(); err != nil {
			t.Errorf("restore the CA store: %v", err)
		}
	})
	if err := os.WriteFile(hubBoxCAStore, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("update-ca-certificates").CombinedOutput(); err != nil {
		t.Fatalf("update-ca-certificates: %v\n%s", err, out)
	}

	if _, err := os.Stat(hubBoxCertsD); errors.Is(err, os.ErrNotExist) {
		// Made here, removed here (os.Remove leaves a directory that
		// something else put files in since).
		for _, d := range []string{filepath.Dir(hubBoxCertsD), hubBoxCertsD} {
			if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
				t.Cleanup(func() { os.Remove(d) })
			}
		}
	}
	for _, n := range hubBoxRegistryNames {
		dir := filepath.Join(hubBoxCertsD, n)
		if _, err := os.Stat(dir); err == nil {
			t.Fatalf("%s exists already: the hub box will not replace the machine's own", dir)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range map[string][]byte{"ca.crt": caPEM, ".gantry-hubbox": nil} {
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// removeHubBoxCA takes the test CA out of the system store.
func removeHubBoxCA() error {
	if err := os.Remove(hubBoxCAStore); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if out, err := exec.Command("update-ca-certificates", "--fresh").CombinedOutput(); err != nil {
		return fmt.Errorf("update-ca-certificates --fresh: %v: %s", err, out)
	}
	return nil
}

// cleanHubBoxLeftovers undoes what a hub box that never cleaned up (a
// killed test binary) left on the machine: its marked hosts lines, its CA
// in the store, its certs.d directories.
func cleanHubBoxLeftovers() error {
	hosts, err := os.ReadFile(hubBoxHosts)
	if err != nil {
		return err
	}
	var kept [][]byte
	lines := bytes.SplitAfter(hosts, []byte("\n"))
	for _, l := range lines {
		if !bytes.Contains(l, []byte(hubBoxMark)) {
			kept = append(kept, l)
		}
	}
	if len(kept) != len(lines) {
		if err := os.WriteFile(hubBoxHosts, bytes.Join(kept, nil), 0o644); err != nil {
			return err
		}
	}
	if err := removeHubBoxCA(); err != nil {
		return err
	}
	for _, n := range hubBoxRegistryNames {
		dir := filepath.Join(hubBoxCertsD, n)
		if _, err := os.Stat(filepath.Join(dir, ".gantry-hubbox")); err == nil {
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	}
	return nil
}
