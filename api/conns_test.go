package api

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// limitServer serves, on a unix socket limited to max connections, a
// handler that answers "ok" at /ok and at /stream sends a first line,
// reports on entered, and finishes once release is closed. Each connection
// that falls idle is reported on idle.
type limitServer struct {
	sock    string
	entered chan struct{}
	release chan struct{}
	idle    chan struct{}
	dial    func(t *testing.T) net.Conn
}

func newLimitServer(t *testing.T, max int, cfg *tls.Config, clientCfg *tls.Config) *limitServer {
	t.Helper()
	s := &limitServer{
		sock:    filepath.Join(shortTempDir(t), "s"),
		entered: make(chan struct{}, 4), release: make(chan struct{}), idle: make(chan struct{}, 16),
	}
	ln, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		s.entered <- struct{}{}
		<-s.release
		io.WriteString(w, "second\n")
	})
	srv := &http.Server{Handler: mux, ConnState: func(c net.Conn, st http.ConnState) {
		ConnState(c, st)
		if st == http.StateIdle {
			s.idle <- struct{}{}
		}
	}}
	go srv.Serve(LimitListener(ln, max, cfg))
	t.Cleanup(func() { srv.Close() })
	s.dial = func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("unix", s.sock)
		if err != nil {
			t.Fatal(err)
		}
		if clientCfg != nil {
			c = tls.Client(c, clientCfg)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return s
}

// get sends GET path on c and returns the answer's status and body.
func get(t *testing.T, c net.Conn, br *bufio.Reader, path string) (int, string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: gantry\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stream sends GET /stream on c, reads the first line of the answer and
// returns the rest of its body.
func stream(t *testing.T, c net.Conn) *bufio.Reader {
	t.Helper()
	if _, err := io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: gantry\r\n\r\n"); err != nil {
		t.Fatalf("GET /stream: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET /stream: %v", err)
	}
	body := bufio.NewReader(resp.Body)
	if line, err := body.ReadString('\n'); resp.StatusCode != http.StatusOK || line != "first\n" {
		t.Fatalf("GET /stream: %d %q %v", resp.StatusCode, line, err)
	}
	return body
}

// closed says whether the server closed c: a read ends at once with EOF.
func closed(c net.Conn) bool {
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF
}

// At the limit, a new connection closes the connection idle longest: one
// that never sent a request before one kept alive after its answer.
func TestLimitListenerClosesTheLongestIdle(t *testing.T) {
	s := newLimitServer(t, 2, nil, nil)
	first, second := s.dial(t), s.dial(t) // silent since accepted
	third := s.dial(t)
	if code, body := get(t, third, bufio.NewReader(third), "/ok"); code != http.StatusOK || body != "ok" {
		t.Fatalf("a new client at the limit: %d %q; want 200 ok", code, body)
	}
	<-s.idle // third is kept alive, idle now
	if !closed(first) {
		t.Errorf("the connection idle longest was not closed")
	}
	fourth := s.dial(t) // closes second, silent longer than third has been idle
	if !closed(second) {
		t.Errorf("the silent connection was not closed before the kept-alive one")
	}
	if code, _ := get(t, fourth, bufio.NewReader(fourth), "/ok"); code != http.StatusOK {
		t.Errorf("fourth client: %d, want 200", code)
	}
	<-s.idle
	fifth := s.dial(t) // closes third, idle before fourth
	if !closed(third) {
		t.Errorf("the connection kept alive longest was not closed")
	}
	if code, _ := get(t, fifth, bufio.NewReader(fifth), "/ok"); code != http.StatusOK {
		t.Errorf("fifth client: %d, want 200", code)
	}
}

// When every connection is busy (a streaming answer is), a new one is
// answered 503 and closed, and the streams go on.
func TestLimitListenerAnswersBusy(t *testing.T) {
	serverFiles, clientFiles := testPKI(t)
	scfg, err := ServerTLS(serverFiles)
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := ClientTLS(clientFiles)
	if err != nil {
		t.Fatal(err)
	}
	ccfg.ServerName = "127.0.0.1"
	for _, tc := range []struct {
		name       string
		scfg, ccfg *tls.Config
	}{{"plain", nil, nil}, {"TLS", scfg, ccfg}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLimitServer(t, 1, tc.scfg, tc.ccfg)
			sbr := stream(t, s.dial(t))
			<-s.entered
			late := s.dial(t)
			code, body := get(t, late, bufio.NewReader(late), "/ok")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "--max-connections") {
				t.Fatalf("a client with every connection busy: %d %q; want 503 naming --max-connections", code, body)
			}
			if !closed(late) {
				t.Errorf("the refused connection was left open")
			}
			close(s.release)
			if rest, _ := sbr.ReadString('\n'); rest != "second\n" {
				t.Errorf("the stream went on with %q, want second", rest)
			}
		})
	}
}
