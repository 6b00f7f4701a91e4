package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// run runs a command and returns its combined output and exit code.
func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out), 0
}

// The socket is 0660 and owned by --socket-group: a user outside the group
// is refused, a member is let in.
func TestSocketAccessByGroup(t *testing.T) {
	t.Parallel()
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	group, name := "gantry-it-"+suffix, "gantry-it-u"+suffix
	if out, code := run(t, "groupadd", group); code != 0 {
		t.Fatalf("groupadd: %s", out)
	}
	t.Cleanup(func() { exec.Command("groupdel", group).Run() })
	if out, code := run(t, "useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name); code != 0 {
		t.Fatalf("useradd: %s", out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })

	dir, err := os.MkdirTemp("", "gantry-it-sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "gantry.sock")
	startDaemonAt(t, sock, nil, "--socket-group", group)

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := user.LookupGroup(group)
	if fi.Mode().Perm() != 0o660 || strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)) != g.Gid {
		t.Errorf("socket mode %v gid %d, want 0660 and group %s (%s)", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, group, g.Gid)
	}
	asUser := func() (string, int) {
		return run(t, "runuser", "-u", name, "--", filepath.Join(binDir, "gantry"), "-H", "unix://"+sock, "ls")
	}
	if out, code := asUser(); code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("a user outside %s: exit %d, %q; want refused with permission denied", group, code, out)
	}
	if out, code := run(t, "usermod", "-a", "-G", group, name); code != 0 {
		t.Fatalf("usermod: %s", out)
	}
	if out, code := asUser(); code != 0 {
		t.Errorf("a member of %s: exit %d, %q; want let in", group, code, out)
	}
}

// gantryd refuses a socket path that is a symlink.
func TestSocketSymlinkRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	link := filepath.Join(dir, "gantry.sock")
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, filepath.Join(binDir, "gantryd"), "--socket", link, "--data-dir", filepath.Join(dir, "data"))
	if code == 0 || !strings.Contains(out, "symlink") {
		t.Errorf("gantryd on a symlinked socket path: exit %d, %q; want refused naming the symlink", code, out)
	}
}

// The TCP listener speaks mutual TLS: a client with a certificate from the
// CA gets in (and is logged by its subject), others do not; without TLS it
// refuses a non-loopback address.
func TestTCPListenerWithMutualTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	addr := freeAddr(t)
	d := startDaemon(t, "--tcp", addr, "--tlscacert", pki.ca, "--tlscert", pki.serverCert, "--tlskey", pki.serverKey)

	cli := func(cert, key string) (string, int) {
		args := []string{"-H", "tcp://" + addr, "--tlscacert", pki.ca}
		if cert != "" {
			args = append(args, "--tlscert", cert, "--tlskey", key)
		}
		return run(t, filepath.Join(binDir, "gantry"), append(args, "version")...)
	}
	if out, code := cli(pki.clientCert, pki.clientKey); code != 0 || !strings.Contains(out, "gantryd:") {
		t.Fatalf("a client with a certificate from the CA: exit %d, %q", code, out)
	}
	if out, code := cli(pki.strangerCert, pki.strangerKey); code == 0 {
		t.Errorf("a client with a certificate from another CA got in: %q", out)
	}
	if out, code := cli("", ""); code == 0 || !strings.Contains(out, "--tlscert") {
		t.Errorf("a client without a certificate: exit %d, %q; want refused, naming --tlscert", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log.String(), "CN=gantry-it-client") {
		if time.Now().After(deadline) {
			t.Errorf("gantryd's request log does not name the client certificate's subject:\n%s", d.log.String())
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	out, code := run(t, filepath.Join(binDir, "gantryd"), "--socket", filepath.Join(t.TempDir(), "s.sock"),
		"--data-dir", t.TempDir(), "--tcp", "0.0.0.0:"+strings.Split(freeAddr(t), ":")[1])
	if code == 0 || !strings.Contains(out, "without TLS") {
		t.Errorf("gantryd --tcp 0.0.0.0 without TLS: exit %d, %q; want refused", code, out)
	}
}

type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey, strangerCert, strangerKey string

	// The CA itself, to issue more certificates (see serverCertFor).
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// newPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate signed by it, and a client certificate from another CA.
func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serial := int64(1)
	issue := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			BasicConstraintsValid: true,
			IsCA:                  isCA,
		}
		if isCA {
			tmpl.KeyUsage = x509.KeyUsageCertSign
		} else {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		kder, _ := x509.MarshalECPrivateKey(key)
		return cert, key, der, kder
	}
	ca, caKey, caDER, _ := issue("gantry-it-ca", nil, nil, true, 0)
	_, _, sDER, sKey := issue("127.0.0.1", ca, caKey, false, x509.ExtKeyUsageServerAuth)
	_, _, cDER, cKey := issue("gantry-it-client", ca, caKey, false, x509.ExtKeyUsageClientAuth)
	other, otherKey, _, _ := issue("other-ca", nil, nil, true, 0)
	_, _, xDER, xKey := issue("stranger", other, otherKey, false, x509.ExtKeyUsageClientAuth)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sDER), serverKey: write("server-key.pem", "EC PRIVATE KEY", sKey),
		clientCert: write("client.pem", "CERTIFICATE", cDER), clientKey: write("client-key.pem", "EC PRIVATE KEY", cKey),
		strangerCert: write("stranger.pem", "CERTIFICATE", xDER), strangerKey: write("stranger-key.pem", "EC PRIVATE KEY", xKey),
		caCert: ca, caKey: caKey,
	}
}

// /metrics parses with Prometheus's text parser and its counters match the
// jobs run.
func TestMetricsMatchTheJobsRun(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	ok := trainerDir(t, "print('Model accuracy: 0.95')\n")
	ids := []string{
		d.submit(ok), d.submit(ok),
		d.submit(ok, "--min-accuracy", "0.99"),
		d.submit(trainerDir(t, "import sys\nsys.exit(4)\n")),
	}
	for _, id := range ids {
		d.waitJob(id, 3*time.Minute)
	}
	hc := socketClient(d.socket)
	want := map[string]float64{
		`gantry_jobs_finished_total{state="succeeded"}`:  2,
		`gantry_jobs_finished_total{state="rejected"}`:   1,
		`gantry_jobs_finished_total{state="failed"}`:     1,
		`gantry_jobs_finished_total{state="canceled"}`:   0,
		`gantry_jobs{state="succeeded"}`:                 2,
		`gantry_jobs{state="queued"}`:                    0,
		`gantry_job_phase_duration_seconds{phase="run"}`: 4,
		`gantry_pushes_total`:                            0,
		`gantry_last_accuracy_ratio{image="(no push)"}`:  0.95,
		// Nothing pushed: no layer read or kept.
		`gantry_layers_compressed_total{via="store"}`: 0,
		`gantry_layers_compressed_total{via="save"}`:  0,
		`gantry_layer_store_fallbacks_total`:          0,
		`gantry_blob_store_bytes`:                     0,
	}
	// The metrics follow the event stream: give them a moment to catch up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := scrapeMetrics(hc)
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		for k, v := range want {
			if got[k] != v {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", k, got[k], v))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics do not match the jobs run:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// socketClient is an HTTP client of gantryd's unix socket.
func socketClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
}

// scrapeMetrics returns each sample as "name{label="value"}" -> value
// (a histogram as its count).
func scrapeMetrics(hc *http.Client) (map[string]float64, error) {
	resp, err := hc.Get("http://gantry/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("/metrics does not parse: %w", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			key := name
			if len(m.Label) > 0 {
				var ls []string
				for _, l := range m.Label {
					ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out, nil
}
