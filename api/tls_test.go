package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, both from the CA, and returns the server's and the client's
// files.
func testPKI(t *testing.T) (server, client TLSFiles) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca := write("ca.pem", "CERTIFICATE", caDER)
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	sc, sk := issue(2, "server", x509.ExtKeyUsageServerAuth)
	cc, ck := issue(3, "client", x509.ExtKeyUsageClientAuth)
	return TLSFiles{CA: ca, Cert: sc, Key: sk}, TLSFiles{CA: ca, Cert: cc, Key: ck}
}

// The server speaks TLS 1.2 with ECDHE and an AEAD cipher, or TLS 1.3; a
// client that offers only CBC with SHA-1, or an older version, is refused.
func TestServerTLSOffersOnlyAEADSuites(t *testing.T) {
	serverFiles, clientFiles := testPKI(t)
	scfg, err := ServerTLS(serverFiles)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		max    uint16
		suites []uint16
		ok     bool
	}{
		{"TLS 1.3", tls.VersionTLS13, nil, true},
		{"TLS 1.2 AES-GCM", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"TLS 1.2 AES-256-GCM", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, true},
		{"TLS 1.2 ChaCha20-Poly1305", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"TLS 1.2 CBC-SHA1 only", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}, false},
		{"TLS 1.1", tls.VersionTLS11, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ccfg, err := ClientTLS(clientFiles)
			if err != nil {
				t.Fatal(err)
			}
			ccfg.ServerName = "127.0.0.1"
			ccfg.MinVersion, ccfg.MaxVersion, ccfg.CipherSuites = tls.VersionTLS10, tc.max, tc.suites
			err = handshake(scfg, ccfg)
			if got := err == nil; got != tc.ok {
				t.Errorf("handshake: %v; want it to succeed: %v", err, tc.ok)
			}
		})
	}
}

// handshake runs a TLS handshake between the two configurations over a
// pipe and returns the server's error.
func handshake(scfg, ccfg *tls.Config) error {
	sc, cc := net.Pipe()
	done := make(chan error, 1)
	go func() {
		err := tls.Server(sc, scfg).Handshake()
		sc.Close()
		done <- err
	}()
	tls.Client(cc, ccfg).Handshake()
	cc.Close()
	return <-done
}
