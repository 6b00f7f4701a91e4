package main

import (
	"archive/tar"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tree is a build context a test lays out on disk.
type tree struct {
	files map[string]string // path: contents
	exec  []string          // files made 0755
	dirs  []string          // directories, besides those files imply
	links map[string]string // path: symlink target
}

func (tr tree) write(t *testing.T, dir string) {
	t.Helper()
	for _, d := range tr.dirs {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, body := range tr.files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range tr.exec {
		if err := os.Chmod(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range tr.links {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
}

// sent is one member of the tar stream tarContext produced.
type sent struct {
	typ  byte
	body string
	link string
	mode int64
}

// readSent reads the whole stream, failing the test on a malformed one or a
// name sent twice.
func readSent(t *testing.T, rc io.ReadCloser) map[string]sent {
	t.Helper()
	defer rc.Close()
	got := map[string]sent{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("reading the context stream: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s from the context stream: %v", h.Name, err)
		}
		if _, dup := got[h.Name]; dup {
			t.Errorf("%s sent twice", h.Name)
		}
		got[h.Name] = sent{typ: h.Typeflag, body: string(b), link: h.Linkname, mode: h.Mode}
	}
}

// project is a context like the ones users have: code, logs, data, caches.
var project = tree{
	files: map[string]string{
		"Dockerfile":                        "FROM python:3.12\n",
		"app.py":                            "print('train')\n",
		"train.sh":                          "#!/bin/sh\npython app.py\n",
		"app.log":                           "noise",
		"src/model.py":                      "class Model: pass\n",
		"src/debug.log":                     "kept: *.log only matches at the top, as in docker",
		"src/__pycache__/model.cpython.pyc": "bytecode",
		"__pycache__/app.cpython.pyc":       "bytecode",
		"src/deep/er/__pycache__/x.pyc":     "bytecode",
		"data/train.csv":                    "a,b\n1,2\n",
		"data/keep.txt":                     "keep me",
		"data/sub/keep.txt":                 "not this one",
		"docker/train.Dockerfile":           "FROM python:3.12-slim\n",
	},
	exec: []string{"train.sh"},
	dirs: []string{"empty"},
	links: map[string]string{
		"model.py":    "src/model.py",
		"latest.log":  "app.log",
		"src/dataset": "../data",
	},
}

const projectIgnore = `# what the build does not need
*.log
data/
!data/keep.txt
**/__pycache__
Dockerfile
.dockerignore
`

func TestTarContextHonoursDockerignore(t *testing.T) {
	everything := []string{
		".dockerignore", "Dockerfile", "app.log", "app.py", "train.sh", "latest.log", "model.py",
		"__pycache__/", "__pycache__/app.cpython.pyc",
		"data/", "data/keep.txt", "data/sub/", "data/sub/keep.txt", "data/train.csv",
		"docker/", "docker/train.Dockerfile", "empty/",
		"src/", "src/__pycache__/", "src/__pycache__/model.cpython.pyc", "src/dataset", "src/debug.log",
		"src/deep/", "src/deep/er/", "src/deep/er/__pycache__/", "src/deep/er/__pycache__/x.pyc", "src/model.py",
	}
	tests := []struct {
		name       string
		ignore     string // "" means no .dockerignore at all
		dockerfile string
		want       []string
	}{
		{
			name:       "no dockerignore",
			dockerfile: "Dockerfile",
			want:       slices.DeleteFunc(slices.Clone(everything), func(s string) bool { return s == ".dockerignore" }),
		},
		{
			name:       "patterns, exceptions, and the Dockerfile and .dockerignore kept",
			ignore:     projectIgnore,
			dockerfile: "Dockerfile",
			want: []string{
				".dockerignore", "Dockerfile", "app.py", "train.sh", "model.py",
				"data/keep.txt",
				"docker/", "docker/train.Dockerfile", "empty/",
				"src/", "src/dataset", "src/debug.log", "src/deep/", "src/deep/er/", "src/model.py",
			},
		},
		{
			name:       "everything excluded but what docker build always sends",
			ignore:     "*\n",
			dockerfile: "Dockerfile",
			want:       []string{".dockerignore", "Dockerfile"},
		},
		{
			name:       "a Dockerfile given with -f is kept, the default one is not",
			ignore:     "*\n!src\n",
			dockerfile: "docker/train.Dockerfile",
			want: []string{
				".dockerignore", "docker/train.Dockerfile",
				"src/", "src/__pycache__/", "src/__pycache__/model.cpython.pyc", "src/dataset", "src/debug.log",
				"src/deep/", "src/deep/er/", "src/deep/er/__pycache__/", "src/deep/er/__pycache__/x.pyc", "src/model.py",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			project.write(t, dir)
			if tc.ignore != "" {
				if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(tc.ignore), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			rc, err := tarContext(dir, tc.dockerfile)
			if err != nil {
				t.Fatalf("tarContext: %v", err)
			}
			got := slices.Sorted(maps.Keys(readSent(t, rc)))
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("sent %q\nwant %q", got, want)
				for _, n := range got {
					if !slices.Contains(want, n) {
						t.Errorf("  sent %s, which should be left out", n)
					}
				}
				for _, n := range want {
					if !slices.Contains(got, n) {
						t.Errorf("  did not send %s", n)
					}
				}
			}
		})
	}
}

func TestTarContextSendsTypesAndContents(t *testing.T) {
	dir := t.TempDir()
	project.write(t, dir)
	if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(projectIgnore), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := tarContext(dir, "Dockerfile")
	if err != nil {
		t.Fatalf("tarContext: %v", err)
	}
	got := readSent(t, rc)

	for name, body := range map[string]string{
		".dockerignore": projectIgnore,
		"Dockerfile":    project.files["Dockerfile"],
		"train.sh":      project.files["train.sh"],
		"src/model.py":  project.files["src/model.py"],
		"data/keep.txt": project.files["data/keep.txt"],
	} {
		s, ok := got[name]
		if !ok {
			t.Errorf("%s not sent", name)
			continue
		}
		if s.typ != tar.TypeReg {
			t.Errorf("%s sent as type %q, want a regular file", name, s.typ)
		}
		if s.body != body {
			t.Errorf("%s sent with %q, want %q", name, s.body, body)
		}
	}
	if m := got["train.sh"].mode; m&0o111 == 0 {
		t.Errorf("train.sh sent with mode %o, want it executable", m)
	}
	if m := got["app.py"].mode; m&0o111 != 0 {
		t.Errorf("app.py sent with mode %o, want it not executable", m)
	}
	for name, target := range map[string]string{"model.py": "src/model.py", "src/dataset": "../data"} {
		s := got[name]
		if s.typ != tar.TypeSymlink || s.link != target || s.body != "" {
			t.Errorf("%s sent as type %q -> %q with %d bytes, want a symlink -> %q", name, s.typ, s.link, len(s.body), target)
		}
	}
	for _, name := range []string{"src/", "empty/"} {
		if s := got[name]; s.typ != tar.TypeDir {
			t.Errorf("%s sent as type %q, want a directory", name, s.typ)
		}
	}
	for name := range got {
		if strings.HasPrefix(name, "/") || strings.HasPrefix(name, "./") || strings.Contains(name, dir) {
			t.Errorf("sent %q, want a path relative to the context", name)
		}
	}
}

func TestTarContextRefusesAMissingOrFileContext(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(f, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want string
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"a file", f, "is not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := tarContext(tc.dir, "Dockerfile")
			if err == nil {
				rc.Close()
				t.Fatalf("tarContext(%s) = nil error, want one saying %q", tc.dir, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("tarContext(%s) error %q, want it to say %q", tc.dir, err, tc.want)
			}
		})
	}
}

func TestTarContextKeepsADockerfileInAnExcludedDir(t *testing.T) {
	for _, ignore := range []string{"docker\n", "*\n"} {
		dir := t.TempDir()
		project.write(t, dir)
		if err := os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte(ignore), 0o644); err != nil {
			t.Fatal(err)
		}
		rc, err := tarContext(dir, "docker/train.Dockerfile")
		if err != nil {
			t.Fatalf("tarContext: %v", err)
		}
		if s, ok := readSent(t, rc)["docker/train.Dockerfile"]; !ok || s.body != project.files["docker/train.Dockerfile"] {
			t.Errorf(".dockerignore %q: docker/train.Dockerfile not sent", ignore)
		}
	}
}

func TestDockerfileInContext(t *testing.T) {
	// base/ctx is the context; the test runs in cwd, relative to base.
	tests := []struct {
		name    string
		cwd     string
		dir, f  string
		want    string
		wantErr bool
	}{
		{name: "default", cwd: ".", dir: "ctx", f: "", want: "Dockerfile"},
		{name: "default, any context", cwd: ".", dir: "/does/not/matter", f: "", want: "Dockerfile"},
		{name: "at the top", cwd: ".", dir: "ctx", f: "ctx/Dockerfile", want: "Dockerfile"},
		{name: "in a subdir", cwd: ".", dir: "ctx", f: "ctx/docker/train.Dockerfile", want: "docker/train.Dockerfile"},
		{name: "context is the current dir", cwd: "ctx", dir: ".", f: "docker/train.Dockerfile", want: "docker/train.Dockerfile"},
		{name: "relative to the current dir, not the context", cwd: "ctx/docker", dir: "..", f: "train.Dockerfile", want: "docker/train.Dockerfile"},
		{name: "unclean path", cwd: ".", dir: "./ctx/", f: "ctx/docker/../Dockerfile", want: "Dockerfile"},
		{name: "a dir whose name starts with ..", cwd: ".", dir: "ctx", f: "ctx/..hidden/Dockerfile", want: "..hidden/Dockerfile"},
		{name: "beside the context", cwd: ".", dir: "ctx", f: "Dockerfile", wantErr: true},
		{name: "in a sibling dir", cwd: ".", dir: "ctx", f: "ctx2/Dockerfile", wantErr: true},
		{name: "above the current dir", cwd: "ctx", dir: ".", f: "../Dockerfile", wantErr: true},
		{name: "absolute, outside", cwd: ".", dir: "ctx", f: "/etc/Dockerfile", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			if err := os.MkdirAll(filepath.Join(base, "ctx/docker"), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Chdir(filepath.Join(base, tc.cwd))
			got, err := dockerfileInContext(tc.dir, tc.f)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("dockerfileInContext(%q, %q) = %q, want an error", tc.dir, tc.f, got)
				}
				if msg := err.Error(); !strings.Contains(msg, tc.f) || !strings.Contains(msg, "inside the build context") {
					t.Errorf("error %q does not name %s and say it must be inside the build context", msg, tc.f)
				}
				return
			}
			if err != nil {
				t.Fatalf("dockerfileInContext(%q, %q): %v", tc.dir, tc.f, err)
			}
			if got != tc.want {
				t.Errorf("dockerfileInContext(%q, %q) = %q, want %q", tc.dir, tc.f, got, tc.want)
			}
		})
	}
}

func TestDockerfileInContextAbsolutePaths(t *testing.T) {
	base := t.TempDir()
	t.Chdir(t.TempDir()) // elsewhere: absolute paths do not depend on it
	ctx := filepath.Join(base, "ctx")
	got, err := dockerfileInContext(ctx, filepath.Join(ctx, "docker", "train.Dockerfile"))
	if err != nil || got != "docker/train.Dockerfile" {
		t.Errorf("dockerfileInContext = %q, %v; want %q, nil", got, err, "docker/train.Dockerfile")
	}
	_, err = dockerfileInContext(ctx, filepath.Join(base, "Dockerfile"))
	if err == nil {
		t.Errorf("a Dockerfile beside the context: got no error")
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		t.Errorf("error %v is a file system error; want the rule explained", err)
	}
}
