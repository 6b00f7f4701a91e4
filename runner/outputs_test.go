package runner

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tarDir gives a directory in docker cp's shape: entries under the base
// name, files with their content, links and pipes as headers alone (never
// followed or opened), whatever lies outside left alone.
func TestTarDirIsDockerCpShaped(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string]string{"model.joblib": "weights", "sub/metrics.json": "{}"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var buf bytes.Buffer
	if err := tarDir(context.Background(), root, "output", &buf); err != nil {
		t.Fatalf("tarDir: %v", err)
	}
	got := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		switch h.Typeflag {
		case tar.TypeReg:
			got[h.Name] = "file " + string(data)
			if h.Name == "output/model.joblib" && h.Mode&0o777 != 0o640 {
				t.Errorf("model mode %o, want 640", h.Mode)
			}
		case tar.TypeDir:
			got[h.Name] = "dir"
		case tar.TypeSymlink:
			got[h.Name] = "link " + h.Linkname
		case tar.TypeFifo:
			got[h.Name] = "fifo"
		default:
			got[h.Name] = "type " + string(h.Typeflag)
		}
	}
	want := map[string]string{
		"output/":                 "dir",
		"output/model.joblib":     "file weights",
		"output/sub/":             "dir",
		"output/sub/metrics.json": "file {}",
		"output/escape":           "link " + filepath.Join(outside, "secret"),
		"output/pipe":             "fifo",
	}
	if len(got) != len(want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %q, want %q", name, got[name], w)
		}
	}
}

func TestRootUser(t *testing.T) {
	for u, want := range map[string]bool{"": true, "root": true, "0": true, "0:0": true, "root:staff": true, "nobody": false, "1000:1000": false, "app": false} {
		if got := rootUser(u); got != want {
			t.Errorf("rootUser(%q) = %v, want %v", u, got, want)
		}
	}
}
