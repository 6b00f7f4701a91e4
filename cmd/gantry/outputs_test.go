package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

type tarFile struct {
	name, body string
	typ        byte
	link       string
}

func outputsTar(t *testing.T, files ...tarFile) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if f.typ == 0 {
			f.typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: 0o644, Linkname: f.link}
		if f.typ == tar.TypeReg {
			hdr.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.body))
	}
	tw.Close()
	return &buf
}

func recorded(p, body string) gantry.OutputFile {
	sum := sha256.Sum256([]byte(body))
	return gantry.OutputFile{Path: p, Size: int64(len(body)), Digest: "sha256:" + hex.EncodeToString(sum[:]), Mode: 0o640}
}

func TestExtractOutputs(t *testing.T) {
	model, ckpt := recorded("model.bin", "weights"), recorded("ckpt/last", "checkpoint")
	good := []tarFile{{name: "ckpt/", typ: tar.TypeDir}, {name: "ckpt/last", body: "checkpoint"}, {name: "model.bin", body: "weights"}}
	tests := []struct {
		name    string
		tar     []tarFile
		files   []gantry.OutputFile
		before  map[string]string // files in DIR beforehand
		link    bool              // DIR/ckpt is a symlink out of DIR
		force   bool
		wantErr string
	}{
		{name: "written", tar: good, files: []gantry.OutputFile{ckpt, model}},
		{name: "into an existing directory", tar: good, files: []gantry.OutputFile{ckpt, model}, before: map[string]string{"other": "x"}},
		{name: "digest mismatch", tar: []tarFile{{name: "model.bin", body: "WEIGHTS"}}, files: []gantry.OutputFile{model}, wantErr: "the job's record says " + model.Digest + ": not written"},
		{name: "dot-dot", tar: []tarFile{{name: "../evil", body: "weights"}}, files: []gantry.OutputFile{model}, wantErr: "would land outside"},
		{name: "absolute", tar: []tarFile{{name: "/tmp/evil", body: "weights"}}, files: []gantry.OutputFile{model}, wantErr: "would land outside"},
		{name: "through a symlink", tar: good, files: []gantry.OutputFile{ckpt, model}, link: true, wantErr: "ckpt"},
		{name: "symlink entry", tar: []tarFile{{name: "model.bin", typ: tar.TypeSymlink, link: "/etc/passwd"}}, files: []gantry.OutputFile{model}, wantErr: "not a file"},
		{name: "not in the record", tar: []tarFile{{name: "extra", body: "weights"}}, files: []gantry.OutputFile{model}, wantErr: "does not list"},
		{name: "a file missing", tar: good[2:], files: []gantry.OutputFile{ckpt, model}, wantErr: "held 1 of the 2 files"},
		{name: "exists", tar: good, files: []gantry.OutputFile{ckpt, model}, before: map[string]string{"model.bin": "old"}, wantErr: "model.bin exists: remove it, or pass --force"},
		{name: "exists, forced", tar: good, files: []gantry.OutputFile{ckpt, model}, before: map[string]string{"model.bin": "old"}, force: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outside := t.TempDir()
			dir := filepath.Join(t.TempDir(), "out")
			os.MkdirAll(dir, 0o755)
			for p, body := range tc.before {
				os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644)
			}
			if tc.link {
				os.Symlink(outside, filepath.Join(dir, "ckpt"))
			}
			err := extractOutputs(outputsTar(t, tc.tar...), dir, tc.files, tc.force)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("extract: %v, want an error with %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("extract: %v", err)
			}
			if es, _ := os.ReadDir(outside); len(es) > 0 {
				t.Errorf("%d entries written outside DIR", len(es))
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
				t.Errorf("evil written beside DIR")
			}
			for _, f := range tc.files {
				data, err := os.ReadFile(filepath.Join(dir, f.Path))
				if tc.wantErr == "" && (err != nil || recorded(f.Path, string(data)).Digest != f.Digest) {
					t.Errorf("%s: %v, content %q; want the recorded one", f.Path, err, data)
				}
				if tc.wantErr == "" {
					if fi, err := os.Stat(filepath.Join(dir, f.Path)); err != nil || fi.Mode().Perm() != 0o640 {
						t.Errorf("%s: mode %v, %v; want 0640 as recorded", f.Path, fi.Mode(), err)
					}
				}
				if tc.name == "digest mismatch" && err == nil {
					t.Errorf("%s written despite its digest", f.Path)
				}
			}
			if tc.name == "exists" {
				if data, _ := os.ReadFile(filepath.Join(dir, "model.bin")); string(data) != "old" {
					t.Errorf("model.bin overwritten without --force: %q", data)
				}
			}
			matches, _ := filepath.Glob(filepath.Join(dir, "*.part"))
			if len(matches) > 0 {
				t.Errorf("temporary files left: %v", matches)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{0: "0b", 1023: "1023b", 1024: "1k", 12595: "12.3k", 3 << 29: "1.5g"} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}
