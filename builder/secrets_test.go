package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// secretDockerfile mounts the secret "token" and prints its hash, which
// the build's output then shows; NONCE keeps the step out of the cache.
const secretDockerfile = `FROM gantry/python-ml:bookworm
RUN --mount=type=secret,id=token echo NONCE && sha256sum /run/secrets/token
`

// The Docker engine's embedded BuildKit (the engine's built-in dockerfile
// frontend, no "# syntax" line) mounts a build secret from the session: the
// step sees the value (its hash shows), and the value is nowhere in the
// build's output. A build that mounts a secret not passed fails at that
// step.
func TestEmbeddedBuildKitMountsSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with the Docker engine's BuildKit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, dc := embeddedBuilder(t, ctx)
	value := "secret-" + gantry.NewID(time.Now())
	sum := sha256.Sum256([]byte(value))
	df := strings.ReplaceAll(secretDockerfile, "NONCE", gantry.NewID(time.Now()))
	dir := writeContext(t, map[string]string{"Dockerfile": df})
	name := "gantry-test/builder-secret:" + gantry.NewID(time.Now())
	t.Cleanup(func() {
		dc.ImageRemove(context.Background(), name, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})

	var progress, status bytes.Buffer
	r := Request{ContextDir: dir, Name: name, Status: &status, Secrets: map[string][]byte{"token": []byte(value)}}
	if _, err := b.Build(ctx, r, &progress); err != nil {
		t.Fatalf("build: %v\n%s", err, progress.String())
	}
	if !strings.Contains(progress.String(), hex.EncodeToString(sum[:])) {
		t.Errorf("build output lacks the secret's hash %x:\n%s", sum, progress.String())
	}
	if strings.Contains(progress.String(), value) || strings.Contains(status.String(), value) {
		t.Errorf("the secret's value is in the build's output or status")
	}

	progress.Reset()
	r = Request{ContextDir: writeContext(t, map[string]string{"Dockerfile": strings.ReplaceAll(secretDockerfile, "NONCE", gantry.NewID(time.Now()))}), Name: name}
	if _, err := b.Build(ctx, r, &progress); err == nil {
		t.Errorf("build that mounts a secret no one passed succeeded; want it failed:\n%s", progress.String())
	} else {
		t.Logf("without the secret: %v", err)
	}
}
