package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certFiles are the paths of a mutual-TLS pair's PEM files: the CA that
// signed both sides, and one side's certificate and key.
type certFiles struct {
	CA, Cert, Key string
}

// mtlsFiles writes a throwaway CA, a server certificate for 127.0.0.1 and
// a client certificate into dir, and returns the server's and the client's
// files.
func mtlsFiles(dir string) (server, client certFiles, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return server, client, err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gantry lab CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return server, client, fmt.Errorf("lab CA: %w", err)
	}
	caPath := filepath.Join(dir, "ca.pem")
	if err := writePEMFile(caPath, "CERTIFICATE", caDER); err != nil {
		return server, client, err
	}
	server = certFiles{CA: caPath, Cert: filepath.Join(dir, "server-cert.pem"), Key: filepath.Join(dir, "server-key.pem")}
	client = certFiles{CA: caPath, Cert: filepath.Join(dir, "client-cert.pem"), Key: filepath.Join(dir, "client-key.pem")}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if err := signLeaf(srv, ca, caKey, server); err != nil {
		return server, client, err
	}
	cli := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "gantry lab client"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return server, client, signLeaf(cli, ca, caKey, client)
}

// signLeaf signs tmpl with the CA and writes its certificate and key to f.
func signLeaf(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, f certFiles) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.NotBefore = ca.NotBefore
	tmpl.NotAfter = ca.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("lab certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEMFile(f.Cert, "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEMFile(f.Key, "PRIVATE KEY", keyDER)
}

func writePEMFile(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
