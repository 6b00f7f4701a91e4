package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/gantry-ml/gantry"
)

// Client speaks the API over a unix socket.
type Client struct {
	socket string // where it connects, for messages
	base   string // URL the paths go under
	http   *http.Client
}

// DefaultSocket is where gantryd listens unless told otherwise: under
// /run/gantry for root, under $XDG_RUNTIME_DIR for other users.
func DefaultSocket() string {
	if os.Geteuid() != 0 {
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return d + "/gantry/gantry.sock"
		}
	}
	return "/run/gantry/gantry.sock"
}

// TLSFiles name the PEM files of a TLS client, as the docker CLI's
// --tlscacert, --tlscert and --tlskey do.
type TLSFiles struct {
	CA, Cert, Key string
}

// NewClient returns a client for host: "unix:///path/to.sock" (or a plain
// socket path), or "tcp://HOST:PORT", which needs tlsFiles (gantryd's TCP
// listener speaks mutual TLS only). "" means GANTRY_HOST, else
// DefaultSocket. It returns ErrInvalid for another scheme or unreadable TLS
// files.
func NewClient(host string, tlsFiles ...TLSFiles) (*Client, error) {
	if host == "" {
		host = os.Getenv("GANTRY_HOST")
	}
	if host == "" {
		host = "unix://" + DefaultSocket()
	}
	if addr, ok := strings.CutPrefix(host, "tcp://"); ok {
		if len(tlsFiles) == 0 || tlsFiles[0].Cert == "" {
			return nil, gantry.Errorf(gantry.ErrInvalid, "host %q: a TCP host needs --tlscacert, --tlscert and --tlskey (gantryd speaks mutual TLS only)", host)
		}
		cfg, err := ClientTLS(tlsFiles[0])
		if err != nil {
			return nil, err
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		return &Client{socket: host, base: "https://" + addr, http: &http.Client{Transport: tr}}, nil
	}
	sock, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		if strings.Contains(host, "://") {
			return nil, gantry.Errorf(gantry.ErrInvalid, "host %q: want unix:///path/to/gantry.sock or tcp://HOST:PORT", host)
		}
		sock = host
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}
	return &Client{socket: sock, base: "http://gantry", http: &http.Client{Transport: tr}}, nil
}

// load reads the certificate and key (a side's, "client" or "server") and
// the CA it trusts. It returns ErrInvalid.
func (f TLSFiles) load(side string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return cert, nil, gantry.Errorf(gantry.ErrInvalid, "TLS %s certificate: %v", side, err)
	}
	pool, err := loadCA(f.CA)
	return cert, pool, err
}

// ClientTLS returns the TLS configuration of a client that presents Cert
// and Key and trusts only the CA in CA. It returns ErrInvalid.
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load("client")
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// serverSuites are the TLS 1.2 cipher suites the server accepts: ECDHE key
// exchange with an AEAD cipher, nothing with CBC or SHA-1. TLS 1.3 chooses
// among its own suites, all AEAD.
var serverSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerTLS returns the TLS configuration of a server that presents Cert
// and Key and demands a client certificate signed by the CA in CA: TLS 1.2
// with ECDHE and AES-GCM or ChaCha20-Poly1305 only, or TLS 1.3. It returns
// ErrInvalid.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load("server")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		CipherSuites: serverSuites,
	}, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "TLS CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, gantry.Errorf(gantry.ErrInvalid, "TLS CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}

func (c *Client) url(path string, q url.Values) string {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	return c.doHeader(ctx, method, path, q, body, http.Header{"Content-Type": {ctype}})
}

// doHeader is do with the request's headers given (those empty are left out).
func (c *Client) doHeader(ctx context.Context, method, path string, q url.Values, body io.Reader, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		if len(v) > 0 && v[0] != "" {
			req.Header[k] = v
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, gantry.Errorf(gantry.ErrUnavailable, "cannot reach gantryd at %s (is gantryd running? set GANTRY_HOST or --host): %v", c.socket, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var e Error
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("gantryd answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
		}
		return nil, e.err()
	}
	return resp, nil
}

// err is the error e stands for, of its kind when it has one.
func (e Error) err() error {
	if k := kindOf(e.Kind); k != nil {
		return gantry.Errorf(k, "%s", e.Message)
	}
	return fmt.Errorf("%s", e.Message)
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Version returns the daemon's version information.
func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	err := c.getJSON(ctx, "/v1/version", nil, &v)
	return v, err
}

// Info returns the daemon's versions and the operator's policy.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var i Info
	err := c.getJSON(ctx, "/v1/info", nil, &i)
	return i, err
}

// Submit sends spec, the values of its SecretEnv (in SecretEnvHeader), the
// values of its build secrets that ctx carries (gantry.WithBuildSecrets, in
// BuildSecretHeader) and the build context (a tar stream) and returns the
// recorded job. It returns ErrTooLarge for secrets over MaxSecretBytes or
// the build secrets' bounds.
func (c *Client) Submit(ctx context.Context, spec gantry.Spec, secrets map[string]string, tar io.Reader) (*gantry.Job, error) {
	return post[gantry.Job](ctx, c, "/v1/jobs", spec, secrets, tar)
}

// post sends what POST /v1/jobs and /v1/sweeps take (the spec in the query,
// the secrets' values in SecretEnvHeader, the build context as the body)
// and returns the record made.
func post[T any](ctx context.Context, c *Client, path string, spec any, secrets map[string]string, tar io.Reader) (*T, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	sh, err := EncodeSecrets(secrets)
	if err != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {"application/x-tar"}, SecretEnvHeader: {sh}}
	if err := EncodeBuildSecrets(h, gantry.BuildSecretsFrom(ctx)); err != nil {
		return nil, err
	}
	resp, err := c.doHeader(ctx, http.MethodPost, path, url.Values{"spec": {string(data)}}, tar, h)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v T
	return &v, json.NewDecoder(resp.Body).Decode(&v)
}

// Get returns job id's record.
func (c *Client) Get(ctx context.Context, id string) (*gantry.Job, error) {
	var j gantry.Job
	if err := c.getJSON(ctx, "/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// List returns a page of jobs, newest first, and the cursor of the next.
func (c *Client) List(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Before != "" {
		q.Set("before", o.Before)
	}
	for _, s := range o.States {
		q.Add("state", string(s))
	}
	var l JobList
	if err := c.getJSON(ctx, "/v1/jobs", q, &l); err != nil {
		return nil, "", err
	}
	return l.Jobs, l.Next, nil
}

// Logs copies job id's log to w; with follow, until the job ends.
func (c *Client) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	return c.copy(ctx, "/v1/jobs/"+url.PathEscape(id)+"/logs", follow, w)
}

// Progress copies job id's push progress (JSON lines of gantry.Progress)
// to w; with follow, until the job ends.
func (c *Client) Progress(ctx context.Context, id string, follow bool, w io.Writer) error {
	return c.copy(ctx, "/v1/jobs/"+url.PathEscape(id)+"/progress", follow, w)
}

// BuildStatus copies job id's build status (JSON lines of BuildKit's
// client.SolveStatus) to w; with follow, until the job ends.
func (c *Client) BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error {
	return c.copy(ctx, "/v1/jobs/"+url.PathEscape(id)+"/build", follow, w)
}

func (c *Client) copy(ctx context.Context, path string, follow bool, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := c.do(ctx, http.MethodGet, path, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// Outputs returns the files job id kept as a tar stream, which the caller
// closes. It returns ErrConflict before the job has finished training,
// ErrNotFound for an unknown job or one that kept none. A stream that
// breaks off ends with an error other than io.EOF.
func (c *Client) Outputs(ctx context.Context, id string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/outputs", nil, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Cancel asks gantryd to cancel job id and returns the record as it stands.
func (c *Client) Cancel(ctx context.Context, id string) (*gantry.Job, error) {
	return c.postJob(ctx, "/v1/jobs/"+url.PathEscape(id)+"/cancel", nil)
}

// Push pushes a finished job's image again, to refs or to its own
// references, and returns the updated record.
func (c *Client) Push(ctx context.Context, id string, refs []string) (*gantry.Job, error) {
	data, err := json.Marshal(PushRequest{To: refs})
	if err != nil {
		return nil, err
	}
	return c.postJob(ctx, "/v1/jobs/"+url.PathEscape(id)+"/push", data)
}

// PushProgress is Push, handing rep the push's lines and typed progress as
// gantryd sends them.
func (c *Client) PushProgress(ctx context.Context, id string, refs []string, rep gantry.Reporter) (*gantry.Job, error) {
	data, err := json.Marshal(PushRequest{To: refs})
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/push", url.Values{"progress": {"1"}}, bytes.NewReader(data), "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		var j gantry.Job
		return &j, dec.Decode(&j)
	}
	for {
		var l PushLine
		if err := dec.Decode(&l); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("the push's answer ended before its outcome: %w", err)
		}
		switch {
		case l.Job != nil:
			return l.Job, nil
		case l.Error != nil:
			return nil, l.Error.err()
		case l.Progress != nil:
			rep.Progress(*l.Progress)
		case l.Line != "":
			rep.Linef("%s", l.Line)
		}
	}
}

func (c *Client) postJob(ctx context.Context, path string, body []byte) (*gantry.Job, error) {
	var r io.Reader
	ctype := ""
	if body != nil {
		r, ctype = bytes.NewReader(body), "application/json"
	}
	resp, err := c.do(ctx, http.MethodPost, path, nil, r, ctype)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var j gantry.Job
	return &j, json.NewDecoder(resp.Body).Decode(&j)
}

// Events reads the event stream: the events after since (for one job, or
// all when job is ""), then, with follow, new ones as they happen. fn is
// called for each; the stream of one job ends after its terminal state.
// It returns fn's error, or the stream's.
func (c *Client) Events(ctx context.Context, since uint64, job string, follow bool, fn func(gantry.Event) error) error {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}}
	if job != "" {
		q.Set("job", job)
	}
	if !follow {
		q.Set("follow", "0")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/events", q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // id:, event:, comments and the blank line between events
		}
		var e gantry.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("event stream: %w", err)
	}
	return ctx.Err()
}

// History returns the jobs that pushed to the image name, newest first,
// each marked whether name:tag holds its image now.
func (c *Client) History(ctx context.Context, name, tag string) ([]gantry.HistoryEntry, error) {
	var h []gantry.HistoryEntry
	err := c.getJSON(ctx, "/v1/history", url.Values{"name": {name}, "tag": {tag}}, &h)
	return h, err
}
