package daemon

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// tarEntry is one member of a tar stream a test builds. typ defaults to a
// regular file; size, when set, overrides the header's size, and the stream
// ends with that entry's body as is (malformed on purpose, with no trailer).
type tarEntry struct {
	name string
	typ  byte
	link string
	mode int64
	body string
	size int64
}

func regular(name, body string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, body: body} }
func directory(name string) tarEntry     { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlinkTo(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeSymlink, link: target}
}
func hardlinkTo(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeLink, link: target}
}

// tarOf returns the tar stream holding entries, in order.
func tarOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.size != 0 {
			h.Size = e.size
		}
		if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.size != 0 {
			// The writer refuses a body that does not match the header;
			// hostile streams bypass it.
			buf.WriteString(e.body)
			return buf.Bytes()
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatalf("tar body %q: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar close: %v", err)
	}
	return buf.Bytes()
}

// sandbox is a context dir two levels below a temp dir of its own, so that
// entries climbing one or two levels out land somewhere the test can see,
// and a second temp dir standing for any absolute path outside.
type sandbox struct {
	base, parent, dir, outside string
}

func newSandbox(t *testing.T) sandbox {
	t.Helper()
	base := t.TempDir()
	s := sandbox{base: base, parent: filepath.Join(base, "parent"), outside: t.TempDir()}
	s.dir = filepath.Join(s.parent, "ctx")
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkNothingOutside fails the test when the dirs around the context hold
// anything but the context, or the outside dir anything but outsideBefore.
func (s sandbox) checkNothingOutside(t *testing.T, outsideBefore []string) {
	t.Helper()
	for _, c := range []struct {
		dir  string
		want []string
	}{{s.base, []string{"parent"}}, {s.parent, []string{"ctx"}}, {s.outside, outsideBefore}} {
		if got := dirNames(t, c.dir); !slices.Equal(got, c.want) {
			t.Errorf("%s holds %q, want %q: unpack wrote outside the context", c.dir, got, c.want)
		}
	}
}

// checkLinksInside fails the test when a symlink in the context resolves to
// somewhere outside it.
func (s sandbox) checkLinksInside(t *testing.T) {
	t.Helper()
	realDir, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil // dangling, or a loop: points nowhere
		}
		if target != realDir && !strings.HasPrefix(target, realDir+string(filepath.Separator)) {
			rel, _ := filepath.Rel(s.dir, p)
			link, _ := os.Readlink(p)
			t.Errorf("symlink %s -> %s resolves to %s, outside the context", rel, link, target)
		}
		return nil
	})
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

var roomyLimits = Limits{MaxBytes: 1 << 20, MaxEntries: 1000}

func TestUnpackRefusesHostileStreams(t *testing.T) {
	many := make([]tarEntry, 10)
	for i := range many {
		many[i] = regular(fmt.Sprintf("f%d", i), strings.Repeat("x", 200))
	}
	tests := []struct {
		name string
		tar  func(t *testing.T, outside string) []byte
		lim  Limits
		kind error
		// want are what the message must hold for the user to find the
		// culprit: the entry's name, or the limit that was crossed.
		want []string
	}{
		{
			name: "absolute path",
			tar: func(t *testing.T, outside string) []byte {
				return tarOf(t, regular(outside+"/x", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{"/x\"", "absolute"},
		},
		{
			name: "dot dot",
			tar:  func(t *testing.T, _ string) []byte { return tarOf(t, regular("../x", "pwned")) },
			kind: gantry.ErrInvalid,
			want: []string{`"../x"`},
		},
		{
			name: "dot dot in the middle",
			tar:  func(t *testing.T, _ string) []byte { return tarOf(t, regular("a/../../x", "pwned")) },
			kind: gantry.ErrInvalid,
			want: []string{`"a/../../x"`},
		},
		{
			name: "dot dot after a file",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, regular("ok", "fine"), regular("sub/../../../x", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`"sub/../../../x"`},
		},
		{
			name: "symlink to an absolute path, then a file through it",
			tar: func(t *testing.T, outside string) []byte {
				return tarOf(t, symlinkTo("out", outside), regular("out/x", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "out"`, "outside the context"},
		},
		{
			name: "symlink climbing out",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, symlinkTo("esc", "../../x"), regular("esc", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "esc"`, `"../../x"`},
		},
		{
			name: "symlink to the parent, then a file through it",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, symlinkTo("link", "."), symlinkTo("up", ".."), regular("up/x", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "up"`},
		},
		{
			name: "symlink in a subdir climbing out, then a file through it",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, directory("d/"), symlinkTo("d/l", "../.."), regular("d/l/x", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "d/l"`},
		},
		{
			name: "symlink without directory entries climbing out",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, symlinkTo("a/b/l", "../../../x"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "a/b/l"`},
		},
		{
			// The hardlink cases name the target rather than the entry:
			// see TestUnpackHardlinkErrorNamesTheEntry.
			name: "hardlink to dot dot",
			tar:  func(t *testing.T, _ string) []byte { return tarOf(t, hardlinkTo("hl", "../x")) },
			kind: gantry.ErrInvalid,
			want: []string{`"../x"`},
		},
		{
			name: "hardlink to an absolute path",
			tar: func(t *testing.T, outside string) []byte {
				return tarOf(t, hardlinkTo("hl", outside+"/x"))
			},
			kind: gantry.ErrInvalid,
			want: []string{"/x\"", "absolute"},
		},
		{
			// "t -> s/.." is itself let through (see
			// TestUnpackRefusesSymlinksLeavingThroughOtherSymlinks); what
			// matters here is that nothing is written through it.
			name: "file through a chain of symlinks that leaves",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, symlinkTo("s", "."), symlinkTo("t", "s/.."), regular("t/x", "pwned"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "t"`},
		},
		{
			name: "hardlink through a chain of symlinks to a file outside",
			tar: func(t *testing.T, outside string) []byte {
				if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
					t.Fatal(err)
				}
				// s is the context, t its parent, u the base, v the dir
				// holding both base and outside.
				return tarOf(t,
					symlinkTo("s", "."), symlinkTo("t", "s/.."), symlinkTo("u", "t/.."), symlinkTo("v", "u/.."),
					hardlinkTo("hl", "v/"+filepath.Base(outside)+"/secret"))
			},
			kind: gantry.ErrInvalid,
			want: []string{`symlink "t"`},
		},
		{
			name: "character device",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, tarEntry{name: "null", typ: tar.TypeChar})
			},
			kind: gantry.ErrInvalid,
			want: []string{`"null"`, "character device"},
		},
		{
			name: "block device",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, tarEntry{name: "sda", typ: tar.TypeBlock})
			},
			kind: gantry.ErrInvalid,
			want: []string{`"sda"`, "block device"},
		},
		{
			name: "fifo",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, tarEntry{name: "pipe", typ: tar.TypeFifo})
			},
			kind: gantry.ErrInvalid,
			want: []string{`"pipe"`, "named pipe"},
		},
		{
			name: "one file over MaxBytes",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, regular("big", strings.Repeat("x", 2048)))
			},
			lim:  Limits{MaxBytes: 1024, MaxEntries: 1000},
			kind: gantry.ErrTooLarge,
			want: []string{"1024 bytes", ".dockerignore"},
		},
		{
			name: "many small files over MaxBytes",
			tar:  func(t *testing.T, _ string) []byte { return tarOf(t, many...) },
			lim:  Limits{MaxBytes: 1024, MaxEntries: 1000},
			kind: gantry.ErrTooLarge,
			want: []string{"1024 bytes", ".dockerignore"},
		},
		{
			name: "over MaxEntries",
			tar:  func(t *testing.T, _ string) []byte { return tarOf(t, many...) },
			lim:  Limits{MaxBytes: 1 << 20, MaxEntries: 3},
			kind: gantry.ErrTooLarge,
			want: []string{"more than 3 entries", ".dockerignore"},
		},
		{
			name: "truncated body",
			tar: func(t *testing.T, _ string) []byte {
				return tarOf(t, tarEntry{name: "short", body: "only ten b", size: 100})
			},
			kind: gantry.ErrInvalid,
			want: []string{`"short"`},
		},
		{
			name: "truncated header",
			tar: func(t *testing.T, _ string) []byte {
				// whole's header and its one block of body, then a
				// fifth of cut's header.
				return tarOf(t, regular("whole", "fine"), regular("cut", "x"))[:512+512+100]
			},
			kind: gantry.ErrInvalid,
			want: []string{"not a valid tar stream"},
		},
		{
			name: "garbage",
			tar: func(t *testing.T, _ string) []byte {
				return bytes.Repeat([]byte("this is not a tar archive\n"), 100)
			},
			kind: gantry.ErrInvalid,
			want: []string{"not a valid tar stream"},
		},
		{
			name: "empty stream",
			tar:  func(t *testing.T, _ string) []byte { return nil },
			kind: gantry.ErrInvalid,
			want: []string{"empty"},
		},
		{
			name: "end-of-archive marker only",
			tar:  func(t *testing.T, _ string) []byte { return tarOf(t) },
			kind: gantry.ErrInvalid,
			want: []string{"empty"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			lim := tc.lim
			if lim == (Limits{}) {
				lim = roomyLimits
			}
			stream := tc.tar(t, s.outside)
			outsideBefore := dirNames(t, s.outside)
			n, err := unpack(bytes.NewReader(stream), s.dir, lim)
			if err == nil {
				t.Fatalf("unpack = %d, nil; want an error of kind %v", n, tc.kind)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("unpack error %q is of kind %v, want %v", err, gantry.Kind(err), tc.kind)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("unpack error %q does not say %q", err, w)
				}
			}
			if n != 0 {
				t.Errorf("unpack returned %d bytes with its error, want 0", n)
			}
			s.checkNothingOutside(t, outsideBefore)
		})
	}
}

func TestUnpackKeepsAGoodContext(t *testing.T) {
	long := strings.Repeat("deep/", 30) + "file.txt" // needs PAX or GNU long names
	stream := tarOf(t,
		tarEntry{name: "./", typ: tar.TypeDir, mode: 0o755},
		regular("Dockerfile", "FROM scratch\n"),
		regular("src/pkg/model.py", "print('hi')\n"), // no directory entries above it
		directory("data/"),
		directory("data/empty/"),
		regular("data/train.csv", "a,b\n1,2\n"),
		tarEntry{name: "run.sh", mode: 0o755, body: "#!/bin/sh\necho ok\n"},
		tarEntry{name: "secret.txt", mode: 0o600, body: "s3cret"},
		symlinkTo("model.py", "src/pkg/model.py"),
		symlinkTo("src/pkg/csv", "../../data/train.csv"),
		symlinkTo("here", "."),
		regular("here/through.txt", "via link"),
		hardlinkTo("train-copy.csv", "data/train.csv"),
		regular(long, "long"),
	)
	s := newSandbox(t)
	got, err := unpack(bytes.NewReader(stream), s.dir, roomyLimits)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	var want int64
	for _, b := range []string{"FROM scratch\n", "print('hi')\n", "a,b\n1,2\n", "#!/bin/sh\necho ok\n", "s3cret", "via link", "long"} {
		want += int64(len(b))
	}
	if got != want {
		t.Errorf("unpack returned %d bytes, want %d (the sum of the file sizes)", got, want)
	}

	files := []struct {
		path string
		body string
		exec bool
	}{
		{"Dockerfile", "FROM scratch\n", false},
		{"src/pkg/model.py", "print('hi')\n", false},
		{"data/train.csv", "a,b\n1,2\n", false},
		{"run.sh", "#!/bin/sh\necho ok\n", true},
		{"secret.txt", "s3cret", false},
		{"through.txt", "via link", false},
		{"model.py", "print('hi')\n", false}, // through the symlink
		{"src/pkg/csv", "a,b\n1,2\n", false},
		{"train-copy.csv", "a,b\n1,2\n", false},
		{long, "long", false},
	}
	for _, f := range files {
		p := filepath.Join(s.dir, f.path)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", f.path, err)
			continue
		}
		if string(b) != f.body {
			t.Errorf("%s holds %q, want %q", f.path, b, f.body)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if exec := fi.Mode().Perm()&0o100 != 0; exec != f.exec {
			t.Errorf("%s has mode %v: executable %v, want %v", f.path, fi.Mode(), exec, f.exec)
		}
	}
	if fi, err := os.Stat(filepath.Join(s.dir, "secret.txt")); err == nil && fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("secret.txt has mode %v, want no group or other bits (sent as 0600)", fi.Mode())
	}

	for _, d := range []string{"src", "src/pkg", "data", "data/empty"} {
		fi, err := os.Lstat(filepath.Join(s.dir, d))
		if err != nil || !fi.IsDir() {
			t.Errorf("%s: want a directory, got %v, %v", d, fi, err)
		}
	}

	links := []struct{ path, target string }{
		{"model.py", "src/pkg/model.py"},
		{"src/pkg/csv", "../../data/train.csv"},
		{"here", "."},
	}
	for _, l := range links {
		target, err := os.Readlink(filepath.Join(s.dir, l.path))
		if err != nil {
			t.Errorf("%s: want a symlink: %v", l.path, err)
			continue
		}
		if target != l.target {
			t.Errorf("symlink %s -> %q, want -> %q", l.path, target, l.target)
		}
	}

	orig, err1 := os.Lstat(filepath.Join(s.dir, "data/train.csv"))
	dup, err2 := os.Lstat(filepath.Join(s.dir, "train-copy.csv"))
	if err1 != nil || err2 != nil || !os.SameFile(orig, dup) {
		t.Errorf("train-copy.csv is not a hard link to data/train.csv (%v, %v)", err1, err2)
	}
	s.checkNothingOutside(t, nil)
	s.checkLinksInside(t)
}

func TestUnpackLimitsAreInclusive(t *testing.T) {
	stream := tarOf(t, regular("a", strings.Repeat("x", 600)), regular("b", strings.Repeat("y", 424)), directory("d/"))
	tests := []struct {
		name string
		lim  Limits
		kind error
	}{
		{"exactly at both limits", Limits{MaxBytes: 1024, MaxEntries: 3}, nil},
		{"one byte less", Limits{MaxBytes: 1023, MaxEntries: 3}, gantry.ErrTooLarge},
		{"one entry less", Limits{MaxBytes: 1024, MaxEntries: 2}, gantry.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			n, err := unpack(bytes.NewReader(stream), s.dir, tc.lim)
			if gantry.Kind(err) != tc.kind {
				t.Fatalf("unpack = %d, %v; want an error of kind %v", n, err, tc.kind)
			}
			if err == nil && n != 1024 {
				t.Errorf("unpack returned %d bytes, want 1024", n)
			}
		})
	}
}

func TestUnpackHardlinkErrorNamesTheEntry(t *testing.T) {
	for _, target := range []string{"../x", "/etc/passwd"} {
		s := newSandbox(t)
		_, err := unpack(bytes.NewReader(tarOf(t, hardlinkTo("hl", target))), s.dir, roomyLimits)
		if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), `"hl"`) {
			t.Errorf("hardlink hl -> %s: got error %v, want ErrInvalid naming %q", target, err, "hl")
		}
	}
}

func TestUnpackLimitErrorNamesTheEntry(t *testing.T) {
	s := newSandbox(t)
	_, err := unpack(bytes.NewReader(tarOf(t, regular("small", "x"), regular("weights.bin", strings.Repeat("x", 2048)))), s.dir, Limits{MaxBytes: 1024, MaxEntries: 10})
	if !errors.Is(err, gantry.ErrTooLarge) || !strings.Contains(err.Error(), "weights.bin") {
		t.Errorf("got error %v, want ErrTooLarge naming weights.bin", err)
	}
}

func TestUnpackRefusesAHugeSizeAfterAFile(t *testing.T) {
	lim := Limits{MaxBytes: 1024, MaxEntries: 10}
	stream := tarOf(t, regular("a", "x"), tarEntry{name: "huge", body: strings.Repeat("z", 64<<10), size: math.MaxInt64})
	s := newSandbox(t)
	_, err := unpack(bytes.NewReader(stream), s.dir, lim)
	if !errors.Is(err, gantry.ErrTooLarge) {
		t.Errorf("got error %v, want ErrTooLarge", err)
	}
	if fi, err := os.Stat(filepath.Join(s.dir, "huge")); err == nil && fi.Size() > lim.MaxBytes {
		t.Errorf("huge holds %d bytes on disk, over MaxBytes %d", fi.Size(), lim.MaxBytes)
	}
}

func TestUnpackRefusesSymlinksLeavingThroughOtherSymlinks(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
	}{
		{"through a target component", []tarEntry{symlinkTo("s", "."), symlinkTo("t", "s/..")}},
		{"through a parent component", []tarEntry{directory("d/"), symlinkTo("d/l", ".."), symlinkTo("d/l/m", "..")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := unpack(bytes.NewReader(tarOf(t, tc.entries...)), s.dir, roomyLimits)
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Errorf("got error %v, want ErrInvalid", err)
			}
			s.checkNothingOutside(t, nil)
			s.checkLinksInside(t)
		})
	}
}
