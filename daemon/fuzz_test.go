package daemon

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// fuzzLimits are small, so that the fuzzer reaches them.
var fuzzLimits = Limits{MaxBytes: 1 << 20, MaxEntries: 200}

// seedTar returns the tar stream holding entries, each a header and the body
// of a regular file. With cut >= 0 the stream is cut to that many bytes.
func seedTar(f *testing.F, cut int, entries ...seedEntry) []byte {
	f.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		if h.Mode == 0 && h.Typeflag != tar.TypeXGlobalHeader {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			f.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			f.Fatalf("tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatalf("tar close: %v", err)
	}
	if cut >= 0 {
		return buf.Bytes()[:cut]
	}
	return buf.Bytes()
}

type seedEntry struct {
	h    tar.Header
	body string
}

func seedFile(name, body string) seedEntry {
	return seedEntry{h: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}

func seedDir(name string) seedEntry {
	return seedEntry{h: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func seedSymlink(name, target string) seedEntry {
	return seedEntry{h: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}

func seedHardlink(name, target string) seedEntry {
	return seedEntry{h: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

// FuzzUnpack feeds unpack arbitrary streams, as a client submitting a build
// context may send. Whatever the stream, unpack must not panic nor write
// outside the context directory. When it accepts the stream, the context
// holds only files, directories and symlinks that resolve inside it, within
// the limits, and unpack's count is the bytes of the files; when it refuses,
// the error is of kind ErrInvalid or ErrTooLarge, and the caller can remove
// what it wrote.
func FuzzUnpack(f *testing.F) {
	good := []seedEntry{
		{h: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		seedFile("Dockerfile", "FROM scratch\nCOPY . /app\n"),
		seedFile("src/pkg/model.py", "print('hi')\n"),
		seedDir("data/"),
		seedDir("data/empty/"),
		seedFile("data/train.csv", "a,b\n1,2\n"),
		{h: tar.Header{Name: "run.sh", Typeflag: tar.TypeReg, Mode: 0o755}, body: "#!/bin/sh\necho ok\n"},
		seedSymlink("model.py", "src/pkg/model.py"),
		seedSymlink("src/pkg/csv", "../../data/train.csv"),
		seedSymlink("here", "."),
		seedFile("here/through.txt", "via link"),
		seedHardlink("train-copy.csv", "data/train.csv"),
		seedFile(strings.Repeat("deep/", 30)+"long.txt", "a PAX path"),
	}
	seeds := [][]byte{
		seedTar(f, -1, good...),
		seedTar(f, -1, seedFile("Dockerfile", "FROM scratch\n")),
		seedTar(f, -1, seedFile("empty", "")),
		seedTar(f, -1, seedDir("a/"), seedDir("a/"), seedFile("a/b/c", "implicit parents")),
		seedTar(f, -1, seedSymlink("dangling", "nowhere/yet")),
		seedTar(f, -1, seedSymlink("loop", "loop")),
		seedTar(f, -1, seedSymlink("a", "b"), seedSymlink("b", "a")),
		seedTar(f, -1, seedSymlink("d/l", ".."), seedFile("d/l/x", "back at the top")),
		seedTar(f, -1, seedFile("f", "x"), seedHardlink("g", "f"), seedHardlink("h", "g")),
		seedTar(f, -1, seedDir("d/"), seedHardlink("d2", "d")),
		seedTar(f, -1,
			seedEntry{h: tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "global"}}},
			seedEntry{h: tar.Header{Name: "pax", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"comment": "local"}}, body: "x"}),
		seedTar(f, -1, seedEntry{h: tar.Header{Name: "gnu/" + strings.Repeat("n", 120), Typeflag: tar.TypeSymlink, Linkname: "../" + strings.Repeat("l", 120), Format: tar.FormatGNU}}),
		seedTar(f, -1, seedSymlink("l", "d"), seedFile("d/f", "x"), seedHardlink("h", "l/f")),
		// Escapes, each a different way.
		seedTar(f, -1, seedFile("../x", "pwned")),
		seedTar(f, -1, seedFile("a/../../x", "pwned")),
		seedTar(f, -1, seedFile("/tmp/x", "pwned")),
		seedTar(f, -1, seedFile("ok", "fine"), seedFile("sub/../../../x", "pwned")),
		seedTar(f, -1, seedSymlink("esc", "../../x"), seedFile("esc", "pwned")),
		seedTar(f, -1, seedSymlink("out", "/tmp"), seedFile("out/x", "pwned")),
		seedTar(f, -1, seedSymlink("up", ".."), seedFile("up/outside/x", "pwned")),
		seedTar(f, -1, seedSymlink("up", "../outside"), seedFile("up/x", "pwned")),
		seedTar(f, -1, seedSymlink("a/b/l", "../../../x")),
		seedTar(f, -1, seedSymlink("s", "."), seedSymlink("t", "s/.."), seedFile("t/x", "pwned")),
		seedTar(f, -1, seedSymlink("l", "d"), seedSymlink("d", "..")),
		seedTar(f, -1, seedHardlink("hl", "../x")),
		seedTar(f, -1, seedHardlink("hl", "/etc/passwd")),
		// What a context may not hold.
		seedTar(f, -1, seedEntry{h: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}),
		seedTar(f, -1, seedEntry{h: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}}),
		seedTar(f, -1, seedEntry{h: tar.Header{Name: "pipe", Typeflag: tar.TypeFifo}}),
		// Over the limits; the sizes are in the headers (see below), for
		// the fuzzer does poorly with megabytes of input.
		seedTar(f, -1, manyDirs(fuzzLimits.MaxEntries+1)...),
		// Truncated and corrupt.
		seedTar(f, 512+100, seedFile("short", strings.Repeat("x", 200))),
		seedTar(f, 512+512+100, seedFile("whole", "fine"), seedFile("cut", "x")),
		seedTar(f, 300, seedFile("f", "x")),
		seedTar(f, 1024, seedFile("a", "x"), seedFile("b", "y")), // at an entry's end
		bytes.Repeat([]byte("this is not a tar archive\n"), 100),
		make([]byte, 1024),
		nil,
	}
	// Headers whose size is more than the limit, and far more than the
	// body that follows.
	for _, size := range []int64{fuzzLimits.MaxBytes + 1, 1<<33 - 1} {
		big := seedTar(f, -1, seedFile("small", "x"), seedFile("big", "x"))
		copy(big[1024+124:1024+136], fmt.Sprintf("%011o\x00", size))
		seeds = append(seeds, fixChecksums(big))
	}
	// Type flags tar.Writer does not write: old regular files ('\x00', the
	// deprecated tar.TypeRegA), contiguous files, old GNU sparse files.
	for _, typ := range []byte{'\x00', tar.TypeCont, tar.TypeGNUSparse} {
		old := seedTar(f, -1, seedFile("f", "x"))
		old[156] = typ
		seeds = append(seeds, fixChecksums(old))
	}
	// A header with its checksum off by one.
	bad := seedTar(f, -1, seedFile("f", "x"))
	bad[148]++
	seeds = append(seeds, bad)
	for _, s := range seeds {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, stream []byte) {
		checkUnpack(t, stream)
		// A header the fuzzer changed no longer matches its checksum, and
		// the tar reader stops there; with the checksums put right, the
		// changed header itself reaches unpack.
		if fixed := fixChecksums(stream); !bytes.Equal(fixed, stream) {
			checkUnpack(t, fixed)
		}
	})
}

// checkUnpack unpacks stream into a fresh directory and checks what unpack
// did, there and around it.
func checkUnpack(t *testing.T, stream []byte) {
	t.Helper()
	// base/parent/ctx is the context, with base/parent/outside beside it:
	// an entry climbing one or two levels out lands where the test looks.
	base := t.TempDir()
	parent := filepath.Join(base, "parent")
	dir := filepath.Join(parent, "ctx")
	outside := filepath.Join(parent, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n, err := unpack(bytes.NewReader(stream), dir, fuzzLimits)

	checkOnly(t, base, "parent")
	checkOnly(t, parent, "ctx", "outside")
	checkOnly(t, outside)
	if err != nil {
		if !errors.Is(err, gantry.ErrInvalid) && !errors.Is(err, gantry.ErrTooLarge) {
			t.Errorf("unpack error %q is of kind %v, want ErrInvalid or ErrTooLarge", err, gantry.Kind(err))
		}
		if n != 0 {
			t.Errorf("unpack returned %d bytes with its error, want 0", n)
		}
	} else {
		checkContext(t, dir, n)
	}
	// The caller removes the context of a refused submission (and of a
	// finished job); nothing of it may stay behind.
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove the context: %v", err)
	}
	checkOnly(t, parent, "outside")
}

// fixChecksums returns a copy of stream with the checksum of each header
// block set to match the block, walking the stream the way tar.Reader does
// (a header, then its body, if its type has one). It stops at a block it
// cannot read a size from.
func fixChecksums(stream []byte) []byte {
	b := bytes.Clone(stream)
	for off := 0; off+512 <= len(b); {
		blk := b[off : off+512]
		if bytes.Count(blk, []byte{0}) == 512 {
			off += 512
			continue
		}
		size, err := strconv.ParseInt(strings.Trim(string(blk[124:136]), " \x00"), 8, 64)
		if err != nil || size < 0 {
			break
		}
		copy(blk[148:156], "        ")
		var sum int64
		for _, c := range blk {
			sum += int64(c)
		}
		copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
		switch blk[156] {
		case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
			size = 0
		}
		if size > int64(len(b)) {
			break
		}
		off += 512 + int(size+511)/512*512
	}
	return b
}

func manyDirs(n int) []seedEntry {
	es := make([]seedEntry, n)
	for i := range es {
		es[i] = seedDir(fmt.Sprintf("d%d/", i))
	}
	return es
}

// checkOnly fails the test unless dir holds exactly the names want.
func checkOnly(t *testing.T, dir string, want ...string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q: unpack wrote outside the context", dir, got, want)
	}
}

// checkContext checks the context unpack accepted, for which it returned n
// bytes: only files, directories and relative symlinks that resolve inside
// it; no more entries than fuzzLimits allows; and n the size of its files,
// each hard-linked file counted once.
func checkContext(t *testing.T, dir string, n int64) {
	t.Helper()
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []fs.FileInfo
	var size int64
	entries := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch typ := fi.Mode().Type(); typ {
		case fs.ModeDir:
			return nil
		case 0:
			if !slices.ContainsFunc(files, func(o fs.FileInfo) bool { return os.SameFile(o, fi) }) {
				files = append(files, fi)
				size += fi.Size()
			}
		case fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				t.Errorf("symlink %s -> %s: an absolute target", rel, target)
			}
			if real, err := filepath.EvalSymlinks(p); err == nil && !within(realDir, real) {
				t.Errorf("symlink %s -> %s resolves to %s, outside the context", rel, target, real)
			}
			if to, ok := resolve(filepath.Join(realDir, rel)); ok && !within(realDir, to) {
				t.Errorf("symlink %s -> %s leads to %s, outside the context", rel, target, to)
			}
		default:
			t.Errorf("%s is a %v; a context holds only files, directories and symlinks", rel, typ)
		}
		entries++
		return nil
	})
	if err != nil {
		t.Fatalf("walk the context: %v", err)
	}
	if entries > fuzzLimits.MaxEntries {
		t.Errorf("the context holds %d files and links, over MaxEntries %d", entries, fuzzLimits.MaxEntries)
	}
	if n != size {
		t.Errorf("unpack returned %d bytes, but the context's files hold %d", n, size)
	}
	if size > fuzzLimits.MaxBytes {
		t.Errorf("the context's files hold %d bytes, over MaxBytes %d", size, fuzzLimits.MaxBytes)
	}
}

func within(dir, p string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// resolve returns where the absolute path p leads, following the symlinks
// on its way as the kernel does, except that a component that does not
// exist (or is not a directory) is taken as a directory: it says where p
// would lead once the tree around it were filled in. ok is false for a loop.
// It checks the context independently of unpack's own checks.
func resolve(p string) (to string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	cur := "/"
	for followed := 0; len(parts) > 0; {
		c := parts[0]
		parts = parts[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil || fi.Mode().Type() != fs.ModeSymlink {
			cur = next
			continue
		}
		if followed++; followed > 255 {
			return "", false
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", false
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		parts = append(strings.Split(target, "/"), parts...)
	}
	return cur, true
}
