package treesum

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTree writes files (path to content; a content starting with "->"
// makes a symlink to the rest) under a fresh directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustTree(t *testing.T, root string, c *Cache) Sum {
	t.Helper()
	s, err := Tree(context.Background(), root, c)
	if err != nil {
		t.Fatalf("Tree(%s): %v", root, err)
	}
	return s
}

// The digest is the tree's content: the same files anywhere give the same
// digest; a changed byte, a changed mode, a renamed file, a symlink's target
// each change it. A symlink is recorded, not followed.
func TestTreeDigest(t *testing.T) {
	files := map[string]string{"a.csv": "1,2\n", "sub/b.csv": "3,4\n", "link": "->/etc/passwd", "empty/.keep": ""}
	base := mustTree(t, writeTree(t, files), nil)
	if again := mustTree(t, writeTree(t, files), nil); again.Digest != base.Digest {
		t.Errorf("the same files elsewhere: digest %s, want %s", again.Digest, base.Digest)
	}
	if base.Files != 3 || base.Bytes != 8 {
		t.Errorf("Files %d, Bytes %d; want 3 regular files of 8 bytes (the symlink is not one)", base.Files, base.Bytes)
	}
	change := func(name string, edit func(dir string)) {
		dir := writeTree(t, files)
		edit(dir)
		if got := mustTree(t, dir, nil); got.Digest == base.Digest {
			t.Errorf("%s: the digest did not change", name)
		}
	}
	change("a changed byte", func(dir string) { os.WriteFile(filepath.Join(dir, "a.csv"), []byte("1,3\n"), 0o644) })
	change("a changed mode", func(dir string) { os.Chmod(filepath.Join(dir, "sub/b.csv"), 0o600) })
	change("a renamed file", func(dir string) { os.Rename(filepath.Join(dir, "a.csv"), filepath.Join(dir, "c.csv")) })
	change("a symlink's target", func(dir string) {
		os.Remove(filepath.Join(dir, "link"))
		os.Symlink("/etc/group", filepath.Join(dir, "link"))
	})
	change("a new empty directory", func(dir string) { os.Mkdir(filepath.Join(dir, "more"), 0o755) })

	one := writeTree(t, map[string]string{"f": "1,2\n"})
	if s := mustTree(t, filepath.Join(one, "f"), nil); s.Files != 1 || s.Bytes != 4 || s.Digest == "" {
		t.Errorf("a single file: %+v, want it summed", s)
	}
}

// A tree read once is not read again while it is unchanged, by the same
// cache or by one reading the same file later (a restarted gantryd); a file
// that changed is read again, and only it.
func TestTreeCache(t *testing.T) {
	dir := writeTree(t, map[string]string{"a": "alpha", "sub/b": "beta", "sub/c": "gamma"})
	cachePath := filepath.Join(t.TempDir(), "digests.json")
	c := NewCache(cachePath)
	first := mustTree(t, dir, c)
	if first.Read != 3 || first.ReadBytes != 14 {
		t.Errorf("first sum read %d files (%d bytes), want all 3 (14 bytes)", first.Read, first.ReadBytes)
	}
	second := mustTree(t, dir, c)
	if second.Read != 0 || second.Digest != first.Digest {
		t.Errorf("second sum read %d files, digest %s; want none read, digest %s", second.Read, second.Digest, first.Digest)
	}
	later := mustTree(t, dir, NewCache(cachePath))
	if later.Read != 0 || later.Digest != first.Digest {
		t.Errorf("a new cache on the same file read %d files, want none", later.Read)
	}
	// Same size, and the mtime put back: the ctime still tells.
	b := filepath.Join(dir, "sub/b")
	fi, _ := os.Stat(b)
	os.WriteFile(b, []byte("BETA"), 0o644)
	os.Chtimes(b, time.Time{}, fi.ModTime())
	changed := mustTree(t, dir, c)
	if changed.Read != 1 || changed.Digest == first.Digest {
		t.Errorf("after one file changed: read %d files, digest changed %v; want 1 read and a new digest", changed.Read, changed.Digest != first.Digest)
	}
	// A file that is gone is forgotten.
	os.Remove(filepath.Join(dir, "a"))
	mustTree(t, dir, c)
	if _, ok := c.files[filepath.Join(dir, "a")]; ok {
		t.Errorf("the cache still holds a removed file")
	}
}

// The walk does not follow a symlink out of the tree, even one to a
// directory, and a cancelled context stops it.
func TestTreeStaysInside(t *testing.T) {
	outside := writeTree(t, map[string]string{"secret": "do not read"})
	dir := writeTree(t, map[string]string{"a": "x", "out": "->" + outside})
	s := mustTree(t, dir, nil)
	if s.Files != 1 || s.Read != 1 {
		t.Errorf("read %d files of %d, want only a", s.Read, s.Files)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Tree(ctx, dir, nil); err == nil {
		t.Errorf("Tree with a cancelled context: no error")
	}
}
