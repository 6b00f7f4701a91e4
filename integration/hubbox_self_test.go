package integration

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// The hub box behaves as Docker Hub does for go-containerregistry, the
// docker CLI and the engine: a user pushes to their own namespace with a
// token, another user and nobody may not; docker login with no server
// stores the credentials under https://index.docker.io/v1/, and the
// engine pulls the image by its short name. Afterwards the machine is as
// it was: /etc/hosts byte for byte, no test CA in the store, no certs.d.
func TestHubBoxBehavesLikeDockerHub(t *testing.T) {
	hosts, err := os.ReadFile(hubBoxHosts)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("box", func(t *testing.T) {
		box := startHubBox(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
		img, _ := random.Image(1024, 2)
		ref := name.MustParseReference("alice/hubbox-self:1")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		opts := func(user, pw string) []remote.Option {
			o := []remote.Option{remote.WithContext(ctx), remote.WithTransport(box.client)}
			if user != "" {
				o = append(o, remote.WithAuth(&authn.Basic{Username: user, Password: pw}))
			}
			return o
		}
		if err := remote.Write(ref, img, opts("alice", "alice-pw")...); err != nil {
			t.Fatalf("alice pushes to her namespace: %v\ngrants: %v", err, box.grants)
		}
		var terr *transport.Error
		for _, who := range [][2]string{{"bob", "bob-pw"}, {"", ""}} {
			r, _ := name.ParseReference("alice/hubbox-self:" + who[0] + "x")
			err := remote.Write(r, img, opts(who[0], who[1])...)
			if !errors.As(err, &terr) || (terr.StatusCode != http.StatusUnauthorized && terr.StatusCode != http.StatusForbidden) {
				t.Errorf("%q pushes to alice's namespace: %v, want 401/403", who[0], err)
			}
		}
		if _, err := remote.Head(ref, opts("alice", "wrong")...); !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("a wrong password: %v, want 401", err)
		}

		cfg := t.TempDir()
		docker := func(args ...string) (string, error) {
			cmd := exec.Command("docker", args...)
			cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfg)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := docker("login", "-u", "alice", "-p", "alice-pw"); err != nil {
			t.Fatalf("docker login: %v\n%s", err, out)
		}
		if b, _ := os.ReadFile(filepath.Join(cfg, "config.json")); !bytes.Contains(b, []byte(`"https://index.docker.io/v1/"`)) {
			t.Errorf("docker login stored %s, want the key https://index.docker.io/v1/", b)
		}
		if out, err := docker("pull", "alice/hubbox-self:1"); err != nil {
			t.Fatalf("docker pull alice/hubbox-self:1: %v\n%s", err, out)
		}
		docker("rmi", "alice/hubbox-self:1")
	})
	after, err := os.ReadFile(hubBoxHosts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, hosts) {
		t.Errorf("/etc/hosts after the box:\n%s\nwant:\n%s", after, hosts)
	}
	if _, err := os.Stat(hubBoxCAStore); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the test CA is still in the store: %v", err)
	}
	if b, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); bytes.Contains(b, mustRead(t, filepath.Join(hubBoxCADir, "ca.crt"))) {
		t.Errorf("the test CA is still in /etc/ssl/certs/ca-certificates.crt")
	}
	for _, n := range hubBoxRegistryNames {
		if _, err := os.Stat(filepath.Join(hubBoxCertsD, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s/%s is still there: %v", hubBoxCertsD, n, err)
		}
	}
	if strings.Contains(string(after), hubBoxMark) {
		t.Errorf("/etc/hosts keeps the box's lines")
	}
}

func mustRead(t *testing.T, f string) []byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}
