package builder

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// dockerConfig points DOCKER_CONFIG, for the rest of the test, at a new
// docker config holding user's password for registry (what docker login
// writes), or at an empty one when user is "".
func dockerConfig(t *testing.T, registry, user, password string) {
	t.Helper()
	dir := t.TempDir()
	cfg := `{"auths":{}}`
	if user != "" {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		cfg = fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, registry, auth)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// A standalone buildkitd pulls the base from, and pushes the image to, a
// registry that wants a login with the credentials of the user's docker
// config; with none, the build fails.
func TestBuildUsesDockerConfigCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real buildkitd and registry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	reg := startAuthRegistry(t, "trainer", "s3cret")
	base := reg + "/base/busybox:1"
	pushBusybox(t, base, remote.WithAuth(&authn.Basic{Username: "trainer", Password: "s3cret"}))
	b, _ := startBuildKit(t, ctx, reg)
	r := Request{ContextDir: nonceContext(t, base), Stage: reg + "/gantry/staging"}

	dockerConfig(t, reg, "", "")
	var progress bytes.Buffer
	if _, err := b.Build(ctx, r, &progress); err == nil {
		t.Errorf("build with no credentials for %s succeeded; want refused", reg)
	}

	dockerConfig(t, reg, "trainer", "s3cret")
	progress.Reset()
	res, err := b.Build(ctx, r, &progress)
	if err != nil {
		t.Fatalf("build with the docker config's credentials: %v\n%s", err, progress.String())
	}
	if res.Digest == "" {
		t.Errorf("result %+v, want the pushed digest", res)
	}
}

// The Docker engine's embedded BuildKit gets the docker config's
// credentials too: it pulls a base from a registry that wants a login.
func TestEmbeddedBuildKitUsesDockerConfigCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with the Docker engine's BuildKit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	reg := startAuthRegistry(t, "trainer", "s3cret")
	base := reg + "/base/busybox:1"
	pushBusybox(t, base, remote.WithAuth(&authn.Basic{Username: "trainer", Password: "s3cret"}))
	b, dc := embeddedBuilder(t, ctx)
	dockerConfig(t, reg, "trainer", "s3cret")
	name := "gantry-test/builder-auth:" + gantry.NewID(time.Now())
	var progress bytes.Buffer
	res, err := b.Build(ctx, Request{ContextDir: nonceContext(t, base), Name: name}, &progress)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, progress.String())
	}
	t.Cleanup(func() {
		dc.ImageRemove(context.Background(), name, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
	if !strings.HasPrefix(res.ImageID, "sha256:") || res.Digest != "" {
		t.Errorf("result %+v, want an engine image ID and no pushed digest", res)
	}
}
