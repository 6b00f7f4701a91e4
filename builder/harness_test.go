package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry/internal/lab"
)

// startRegistry runs Debian's docker-registry on a free loopback port, with
// its storage in a temporary directory, until the test ends, and returns
// its HOST:PORT.
func startRegistry(t *testing.T) string {
	t.Helper()
	return runRegistry(t, "", http.StatusOK)
}

// startAuthRegistry is startRegistry with htpasswd authentication: only
// user with password may pull or push.
func startAuthRegistry(t *testing.T, user, password string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return runRegistry(t, fmt.Sprintf("auth:\n  htpasswd:\n    realm: gantry-test\n    path: %s\n", htpasswd), http.StatusUnauthorized)
}

// runRegistry runs docker-registry with extra configuration until the
// test ends, once /v2/ answers with the status wanted.
func runRegistry(t *testing.T, extra string, want int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := lab.StartLocalRegistry(ctx, t.TempDir(), extra, want)
	if err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(r.Close)
	return r.Addr
}

// pushBusybox pushes a one-layer linux/amd64 image holding Debian's static
// busybox as /bin/busybox and /bin/sh, a base with a shell for RUN steps
// that buildkitd can pull, to ref. It fails the test when busybox-static
// is not installed.
func pushBusybox(t *testing.T, ref string, opts ...remote.Option) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("needs Debian's busybox-static (make services installs it): %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "bin/cat", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(bb)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		OS: "linux", Architecture: "amd64",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(t, img)},
		Config: v1.Config{Cmd: []string{"/bin/sh"}},
		// Without a history entry per layer, BuildKit writes one of its
		// own, naming how it got the layer, and the digest changes.
		History: []v1.History{{CreatedBy: "COPY /bin/busybox (busybox-static)"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func mustDiffIDs(t *testing.T, img v1.Image) []v1.Hash {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs
}

// startBuildKit starts a lab buildkitd that reaches registry over plain
// HTTP, and a Builder dialed to it over mutual TLS; both end with the test
// unless the caller closes the buildkitd first (close is idempotent).
func startBuildKit(t *testing.T, ctx context.Context, registry string) (b *Builder, closeBK func()) {
	t.Helper()
	bk, err := lab.StartBuildKit(ctx, lab.BuildKitOptions{InsecureRegistries: []string{registry}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	closeBK = func() {
		if closed {
			return
		}
		closed = true
		if b != nil {
			b.Close()
		}
		if err := bk.Close(); err != nil {
			t.Errorf("close buildkitd: %v", err)
		}
	}
	t.Cleanup(closeBK)
	b, err = Dial(ctx, bk.Addr, TLS{CA: bk.CACert, Cert: bk.Cert, Key: bk.Key}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b, closeBK
}

// writeContext writes files into a new build context directory.
func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, s := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// headDigest is the digest the registry serves for ref.
func headDigest(t *testing.T, ref string) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest
}

// rawConfig is the config blob of the image at ref, for a failure message.
func rawConfig(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		return err.Error()
	}
	b, err := img.RawConfigFile()
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// embeddedBuilder dials the Docker engine's own BuildKit, as gantryd does
// without --buildkit-addr, and returns it with the engine's client; the
// test's end closes both.
func embeddedBuilder(t *testing.T, ctx context.Context) (*Builder, *client.Client) {
	t.Helper()
	dc, err := client.New(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	hijack := func(ctx context.Context, url, proto string, meta map[string][]string) (net.Conn, error) {
		return dc.DialHijack(ctx, url, proto, meta)
	}
	b, err := Dial(ctx, "", TLS{}, hijack, nil)
	if err != nil {
		t.Fatalf("no Docker engine (make services starts one): %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, dc
}
