package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gantryd --tcp without TLS does not start, and says what to give; on
// loopback too, where any local user and any web page can reach it.
func TestTCPWithoutTLSRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A bound on failure only: a gantryd that serves does not exit.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gantryd"), "--socket", filepath.Join(dir, "s.sock"),
		"--data-dir", filepath.Join(dir, "data"), "--tcp", "127.0.0.1:0")
	b, err := cmd.CombinedOutput()
	out, code := string(b), cmd.ProcessState.ExitCode()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	if code == 0 || !strings.Contains(out, "without TLS") || !strings.Contains(out, "--tlscacert") {
		t.Errorf("gantryd --tcp 127.0.0.1:0 without TLS: exit %d, %q; want refused, naming --tlscacert", code, out)
	}
}

// What a web page can make a browser send is refused, and records nothing.
func TestBrowserRequestsRefused(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	hc := socketClient(d.socket)
	ctx := trainerDir(t, "print('Model accuracy: 0.95')\n")
	tests := []struct {
		name    string
		ctype   string
		headers map[string]string
		status  int
	}{
		{"origin", "application/x-tar", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"fetch metadata", "application/x-tar", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, http.StatusForbidden},
		{"text/plain", "text/plain", nil, http.StatusForbidden},
		{"form", "application/x-www-form-urlencoded", nil, http.StatusForbidden},
		// The same submission as a program sends it, with a spec no proxy
		// reads as pushing: refused for its key, not for being a browser's.
		{"program, case-folded key", "application/x-tar", nil, http.StatusBadRequest},
	}
	for _, tc := range tests {
		spec := `{}`
		if tc.status == http.StatusBadRequest {
			spec = `{"PUSH": ["` + registry + `/x:y"]}`
		}
		req, err := http.NewRequest(http.MethodPost, "http://gantry/v1/jobs?spec="+url.QueryEscape(spec), tarOf(t, ctx))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", tc.ctype)
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s; want %d", tc.name, resp.StatusCode, body, tc.status)
		}
	}
	resp, err := hc.Get("http://gantry/v1/jobs") // a program's read
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://gantry/v1/jobs", nil)
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a read with Origin: %v %v; want 403", resp.Status, err)
	}
	if out := d.mustGantry("ls"); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("gantry ls after refused submissions:\n%s\nwant no job", out)
	}
}

// tarOf returns dir's files as a tar stream.
func tarOf(t *testing.T, dir string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return &buf
}

// holdEnv makes the test binary a helper that opens connections to a
// socket and holds them until its stdin closes: one process may not hold
// 20,000 descriptors here.
const holdEnv = "GANTRY_IT_HOLD_SOCKET"

func init() {
	if sock := os.Getenv(holdEnv); sock != "" {
		conns, err := dialIdle(sock, 10000)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		for _, c := range conns {
			c.Close()
		}
		os.Exit(0)
	}
}

// dialIdle opens n connections to sock that send nothing.
func dialIdle(sock string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	full := 0
	for len(conns) < n {
		c, err := net.Dial("unix", sock)
		if errors.Is(err, syscall.EAGAIN) && full < 1e7 {
			full++ // the backlog is full until gantryd accepts
			continue
		}
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("connection %d: %w", len(conns), err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// 20,000 connections that send nothing do not keep a client out: gantryd
// closes the idle ones to make room, holding no more than --max-connections.
// A process may hold fewer than 20,000 descriptors here (the hard limit is
// 20,000, and raising it is not permitted), so a helper holds half.
func TestIdleConnectionsDoNotStopTheAPI(t *testing.T) {
	t.Parallel()
	const max = 1024
	d := startDaemon(t, "--max-connections", strconv.Itoa(max))
	// Half the connections are this process's, half a helper's.
	helper := exec.Command(os.Args[0])
	helper.Env = append(os.Environ(), holdEnv+"="+d.socket)
	stdin, _ := helper.StdinPipe()
	stdout, _ := helper.StdoutPipe()
	helper.Stderr = os.Stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); helper.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the helper holding 10000 connections: %q %v", line, err)
	}
	conns, err := dialIdle(d.socket, 10000)
	if err != nil {
		t.Fatalf("with 10000 idle connections open: %v", err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) > max+64 {
		t.Errorf("gantryd holds %d descriptors with 20000 connections opened; want at most %d connections kept", len(fds), max)
	}
	// A bound on failure only: without the limit gantryd may never accept.
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, filepath.Join(binDir, "gantry"), "ls")
	cmd.Env = append(cmd.Environ(), "GANTRY_HOST=unix://"+d.socket)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "JOB ID") {
		t.Fatalf("gantry ls with 20000 idle connections opened: %v\n%s", err, out)
	}
}

// A TLS 1.2 client that offers only CBC with SHA-1 gets no handshake; one
// that offers AES-GCM does.
func TestTLS12CBCSuitesRefused(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	addr := freeAddr(t)
	startDaemon(t, "--tcp", addr, "--tlscacert", pki.ca, "--tlscert", pki.serverCert, "--tlskey", pki.serverKey)
	cert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		suite uint16
		ok    bool
	}{
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, false},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
	} {
		c, err := tls.Dial("tcp", addr, &tls.Config{
			Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
			MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite},
		})
		if err == nil {
			c.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("TLS 1.2 handshake offering only %s: %v; want it to succeed: %v", tls.CipherSuiteName(tc.suite), err, tc.ok)
		}
	}
}
