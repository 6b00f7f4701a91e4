package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gantry-ml/gantry"
)

// hubNames are the names Docker Hub answers to. The fake hub's certificate
// carries them, and its proxy opens tunnels to them alone.
var hubNames = []string{"index.docker.io", "registry-1.docker.io", "docker.io"}

// serverCertFor issues a TLS server certificate from p's CA for the DNS
// names.
func (p pki) serverCertFor(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, der := issueCert(t, p.caCert, p.caKey, names[0], names, x509.ExtKeyUsageServerAuth)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeHub is Docker Hub as far as a Go client can tell without touching the
// machine's /etc/hosts or CA store: go-containerregistry's in-process
// registry behind TLS on 127.0.0.1, with a certificate for Docker Hub's
// names from a test CA, reached through an HTTP CONNECT proxy on 127.0.0.1
// that tunnels those names (port 443), and nothing else, to it. A process
// given HTTPS_PROXY=proxy and SSL_CERT_FILE=caFile talks to "index.docker.io"
// and reaches the fake; nothing leaves loopback.
type fakeHub struct {
	caFile   string // PEM of the CA that signed the hub's certificate
	proxyURL string // http://127.0.0.1:PORT
	regAddr  string // the TLS registry's own address
	client   *http.Transport

	mu      sync.Mutex
	tunnels []string // CONNECT targets let through
	refused []string // requests the proxy refused
}

func startFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	p := newPKI(t)
	h := &fakeHub{caFile: p.ca}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.regAddr = ln.Addr().String()
	reg := &http.Server{
		Handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)),
			ggcrregistry.WithBlobHandler(ggcrregistry.NewDiskBlobHandler(t.TempDir()))),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{p.serverCertFor(t, hubNames...)}},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go reg.ServeTLS(ln, "", "")
	t.Cleanup(func() { reg.Close() })

	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.proxyURL = "http://" + pln.Addr().String()
	proxy := &http.Server{Handler: http.HandlerFunc(h.serveProxy), ErrorLog: log.New(io.Discard, "", 0)}
	go proxy.Serve(pln)
	t.Cleanup(func() { proxy.Close() })

	// The test's own client goes the way gantryd does: through the proxy,
	// trusting the test CA alone.
	pem, err := os.ReadFile(p.ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	pu, _ := url.Parse(h.proxyURL)
	h.client = &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(h.client.CloseIdleConnections)
	return h
}

// serveProxy tunnels CONNECT HOST:443 to the fake registry for Docker Hub's
// names and refuses every other request with 403.
func (h *fakeHub) serveProxy(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if r.Method != http.MethodConnect || err != nil || port != "443" || !slices.Contains(hubNames, strings.ToLower(host)) {
		h.note(&h.refused, r.Method+" "+r.Host)
		http.Error(w, "the test proxy reaches the fake Docker Hub alone", http.StatusForbidden)
		return
	}
	up, err := net.DialTimeout("tcp", h.regAddr, 10*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	h.note(&h.tunnels, r.Host)
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, buf); done <- struct{}{} }()
	go func() { io.Copy(conn, up); done <- struct{}{} }()
	<-done
}

func (h *fakeHub) note(list *[]string, s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*list = append(*list, s)
}

// env is what gantryd needs to reach the fake hub as Docker Hub: the
// proxy, the CA, and no credentials of the machine's. Plain HTTP goes to
// the proxy too, which refuses it: nothing gantryd sends to a name leaves
// loopback (loopback addresses are never proxied).
func (h *fakeHub) env(t *testing.T) []string {
	return []string{
		"HTTPS_PROXY=" + h.proxyURL, "https_proxy=" + h.proxyURL,
		"HTTP_PROXY=" + h.proxyURL, "http_proxy=" + h.proxyURL,
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost",
		"SSL_CERT_FILE=" + h.caFile, "SSL_CERT_DIR=" + t.TempDir(),
		"DOCKER_CONFIG=" + t.TempDir(),
	}
}

// served returns the digest the fake hub serves for ref ("user/repo:tag",
// read as Docker Hub's), or "" when it has no such tag.
func (h *fakeHub) served(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if r.Context().RegistryStr() != name.DefaultRegistry {
		t.Fatalf("%s is not a Docker Hub reference", ref)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(h.client))
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return ""
	}
	if err != nil {
		t.Fatalf("HEAD %s on the fake hub: %v", ref, err)
	}
	return d.Digest.String()
}

// The tutorial's own target, a Docker Hub reference with no registry host
// (user/repo:tag), goes through the whole pipeline like any other: two jobs
// push to it and promote "champion", the better one second; the champion
// tag the hub serves is the better job's image, each record says why, and
// gantry history, asked with the short or the full name, lists both jobs
// with the digests the hub serves and marks the better as champion.
func TestDockerHubStyleReference(t *testing.T) {
	t.Parallel()
	hub := startFakeHub(t)
	d := startDaemonEnv(t, hub.env(t))
	dir := forcedTrainer(t)
	var b [4]byte
	rand.Read(b[:])
	const repo = "user/ml-docker-app"
	run := "run-" + hex.EncodeToString(b[:])

	steps := []struct{ acc, reason string }{
		{"0.90", "promoted: the tag held no image with a provenance record"},
		{"0.95", "promoted: accuracy 0.9500 > 0.9000"},
	}
	var jobs []*gantry.Job
	var digests []string
	for i, s := range steps {
		ref := repo + ":" + run + "-" + s.acc
		id := d.submit(dir, "--build-arg", "ACC="+s.acc, "--push", ref, "--promote", "champion")
		j := d.waitJob(id, 5*time.Minute)
		if j.State != gantry.StateSucceeded {
			t.Fatalf("job %d (%s): %s (%s)", i, ref, j.State, j.Error)
		}
		if got, want := j.Name(), "index.docker.io/"+repo; got != want {
			t.Errorf("job %d: grouped under %q, want %q", i, got, want)
		}
		served := hub.served(t, ref)
		if len(j.Pushes) == 0 || j.Pushes[0].Digest != served || served == "" {
			t.Fatalf("job %d: pushes %+v; the hub serves %s for %s", i, j.Pushes, served, ref)
		}
		if got := hub.served(t, repo+":job-"+j.ID); got != served {
			t.Errorf("job %d: the hub's job-%s tag holds %s, want %s", i, j.ID, got, served)
		}
		want := gantry.Promotion{Tag: "index.docker.io/" + repo + ":champion", Promoted: true, Reason: s.reason}
		if len(j.Promotions) != 1 || j.Promotions[0] != want {
			t.Errorf("job %d: promotions %+v, want [%+v]", i, j.Promotions, want)
		}
		if got := hub.served(t, repo+":champion"); got != served {
			t.Errorf("after job %d the hub's champion tag holds %s, want the job's %s", i, got, served)
		}
		jobs, digests = append(jobs, j), append(digests, served)
	}

	want := []gantry.HistoryEntry{
		{Job: jobs[1].ID, Digest: digests[1], Champion: true, Reason: steps[1].reason},
		{Job: jobs[0].ID, Digest: digests[0], Champion: false, Reason: steps[0].reason},
	}
	for _, n := range []string{repo, "index.docker.io/" + repo, "docker.io/" + repo} {
		var h []gantry.HistoryEntry
		if err := json.Unmarshal([]byte(d.mustGantry("history", n, "--json")), &h); err != nil {
			t.Fatalf("gantry history %s --json: %v", n, err)
		}
		if len(h) != len(want) {
			t.Errorf("gantry history %s: %+v, want %d entries", n, h, len(want))
			continue
		}
		for i, e := range h {
			w := want[i]
			if e.Job != w.Job || e.Digest != w.Digest || e.Champion != w.Champion || e.Reason != w.Reason || e.State != gantry.StateSucceeded {
				t.Errorf("gantry history %s, entry %d: %+v, want job %s, digest %s, champion %v, reason %q", n, i, e, w.Job, w.Digest, w.Champion, w.Reason)
			}
		}
	}

	// What a user reads: the table, one line per job, the champion starred.
	out := d.mustGantry("history", repo)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("gantry history %s: want a header and two jobs:\n%s", repo, out)
	}
	for i, w := range want {
		// JOB ID, CREATED (date and time), STATE, ACCURACY, DIGEST, HOLDS champion, WHY
		f := strings.Fields(lines[i+1])
		if len(f) < 7 || f[0] != w.Job || f[5] != w.Digest[:19] || (f[6] == "*") != w.Champion || !strings.HasSuffix(lines[i+1], w.Reason) {
			t.Errorf("gantry history %s, line %d: %q, want job %s, digest %s, champion %v, reason %q", repo, i+1, lines[i+1], w.Job, w.Digest[:19], w.Champion, w.Reason)
		}
	}

	hub.mu.Lock()
	defer hub.mu.Unlock()
	if len(hub.refused) > 0 {
		t.Errorf("the proxy refused %q: something asked for more than Docker Hub's names", hub.refused)
	}
}
