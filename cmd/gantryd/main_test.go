package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

// ParseFlags refuses a bad flag itself, naming it, before Run opens or dials
// anything: these need no engine.
func TestParseFlagsRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		say  string // part of the error
	}{
		{[]string{"--allow-cap", "SYS_ADMIN"}, "--allow-cap SYS_ADMIN"},
		{[]string{"--allow-network", "host"}, "--allow-host-root"},
		{[]string{"--max-log", "0"}, "--max-log"},
		{[]string{"--blob-cache", "lots"}, "--blob-cache"},
		{[]string{"--tcp", "127.0.0.1:0"}, "--tlscacert"},
		{[]string{"--tcp", "127.0.0.1:0", "--tlscacert", "ca.pem"}, "--tlscert"},
		{[]string{"--tcp", "8080", "--tlscacert", "ca.pem", "--tlscert", "c.pem", "--tlskey", "k.pem"}, "want HOST:PORT"},
		{[]string{"--http-user", "ops"}, "need --http"},
		{[]string{"run"}, "unexpected arguments"},
		{[]string{"--backend", "k8s"}, "want local or swarm"},
		{[]string{"--backend", "swarm"}, "needs --staging-repo"},
		{[]string{"--backend", "swarm", "--staging-repo", "Not A/Repo"}, "--staging-repo"},
	} {
		m := NewMain()
		err := m.ParseFlags(context.Background(), tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("ParseFlags(%q): %v; want an error saying %q", tc.args, err, tc.say)
		}
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	m := parsed(t, "--socket", "/s", "--max-queue", "7", "--allow-cap", "NET_BIND_SERVICE,KILL")
	c := m.Config
	if c.Socket != "/s" || c.MaxJobs != 2 || c.BlobCache != 20<<30 || c.MaxConns != 1024 || c.HTTP != "" || c.Credentials != nil {
		t.Errorf("Config = %+v; want --socket /s and the defaults (2 jobs, 20g of blobs, 1024 connections, no dashboard)", c)
	}
	if p := c.Policy; p.MaxQueue != 7 || len(p.CapAdd) != 2 || p.Resources.PidsLimit != 1024 {
		t.Errorf("Policy = %+v; want --max-queue 7, the two capabilities and the default pids limit", p)
	}
}

// A Run that fails leaves nothing for Close to trip on.
func TestCloseAfterFailedRun(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := parsed(t, "--data-dir", file, "--socket", file+".sock")
	if err := m.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Errorf("Run with a file as --data-dir: %v; want refused", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close after a failed Run: %v", err)
	}
}

// gantryd runs in process: Run returns once the API answers on the socket,
// and Close removes the socket and releases the data file, so a second
// gantryd opens it.
func TestMainServesAndCloses(t *testing.T) {
	needEngine(t)
	dir := t.TempDir()
	sock, data := filepath.Join(dir, "gantry.sock"), filepath.Join(dir, "data")
	for i := range 2 {
		m := parsed(t, "--socket", sock, "--data-dir", data, "--max-queue", "7")
		if err := m.Run(t.Context()); err != nil {
			m.Close()
			t.Fatalf("Run #%d: %v", i+1, err)
		}
		askAPI(t, sock)
		if err := m.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Close #%d the socket is still there (%v)", i+1, err)
		}
	}
}

// A Run that fails once the socket is made (here: --tcp's TLS files are
// missing) still leaves Close the socket to remove and the store to close.
func TestCloseAfterRunFailsServing(t *testing.T) {
	needEngine(t)
	dir := t.TempDir()
	sock, data := filepath.Join(dir, "gantry.sock"), filepath.Join(dir, "data")
	m := parsed(t, "--socket", sock, "--data-dir", data, "--tcp", "127.0.0.1:0",
		"--tlscacert", filepath.Join(dir, "ca.pem"), "--tlscert", filepath.Join(dir, "c.pem"), "--tlskey", filepath.Join(dir, "k.pem"))
	if err := m.Run(t.Context()); err == nil {
		t.Errorf("Run with missing TLS files: served; want refused")
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close after a failed Run: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close the socket is still there (%v)", err)
	}
	m = parsed(t, "--socket", sock, "--data-dir", data, "--max-queue", "7")
	err := m.Run(t.Context())
	if err == nil {
		askAPI(t, sock)
	}
	if cerr := m.Close(); err != nil || cerr != nil {
		t.Errorf("a second gantryd on the same data dir: Run %v, Close %v", err, cerr)
	}
}

// askAPI checks what a user of the socket sees: the versions, no jobs, and
// the policy the flags gave.
func askAPI(t *testing.T, sock string) {
	t.Helper()
	c, err := api.NewClient("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Version(t.Context())
	if err != nil || v.Version != gantry.Version || v.APIVersion != api.Version || v.Engine == "" {
		t.Errorf("Version: %+v, %v; want gantry %s, API %s and the engine's version", v, err, gantry.Version, api.Version)
	}
	jobs, _, err := c.List(t.Context(), gantry.JobFilter{})
	if err != nil || len(jobs) != 0 {
		t.Errorf("List: %d jobs, %v; want none", len(jobs), err)
	}
	info, err := c.Info(t.Context())
	if err != nil || info.Policy.MaxQueue != 7 {
		t.Errorf("Info: policy %+v, %v; want --max-queue 7", info.Policy, err)
	}
}

func needEngine(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts gantryd in process, which dials the Docker engine and its BuildKit; run without -short on a machine with dockerd")
	}
}

// parsed is a new Main with args parsed.
func parsed(t *testing.T, args ...string) *Main {
	t.Helper()
	m := NewMain()
	if err := m.ParseFlags(t.Context(), args); err != nil {
		t.Fatalf("ParseFlags(%q): %v", args, err)
	}
	return m
}
