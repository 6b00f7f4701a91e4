package lab

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
)

// A started buildkitd answers a client with its mutual-TLS files, refuses
// one without a client certificate, and leaves nothing behind once closed.
func TestBuildKit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real buildkitd (root; builds it the first time)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bk, err := StartBuildKit(ctx, BuildKitOptions{InsecureRegistries: []string{"127.0.0.1:5000"}, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			bk.Close()
		}
	}()
	ws, err := bk.listWorkers(ctx)
	if err != nil {
		t.Fatalf("list workers over mTLS: %v", err)
	}
	if len(ws) == 0 || ws[0].Labels["org.mobyproject.buildkit.worker.executor"] != "oci" {
		t.Errorf("workers %+v, want the OCI worker", ws)
	}
	if _, err := os.Stat(bk.Root); err != nil {
		t.Errorf("state dir: %v", err)
	}

	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	c, err := client.New(nctx, bk.Addr, client.WithServerConfig("127.0.0.1", bk.CACert))
	if err == nil {
		_, err = c.ListWorkers(nctx)
		c.Close()
	}
	if err == nil {
		t.Errorf("a client without a certificate listed the workers")
	}

	closed = true
	if err := bk.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{bk.Root, bk.CACert, bk.Key} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s after Close: %v, want it gone", f, err)
		}
	}
	if _, err := bk.listWorkers(ctx); err == nil {
		t.Errorf("buildkitd still answers after Close")
	}
}

// testLog writes buildkitd's log into the test's.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Logf("buildkitd: %s", p)
	return len(p), nil
}
