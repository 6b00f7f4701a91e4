// Package treesum digests a tree of files by what it holds: its entries'
// relative paths, in sorted order, each entry's mode, each regular file's
// sha256 and each symlink's target text. The digests of files are cached by
// the file's identity (path, device, inode, size, mtime, ctime), so that a
// tree that did not change is walked but not read again.
package treesum

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
)

// Sum is what Tree found.
type Sum struct {
	// Digest is "sha256:" and the hex sha256 over the entries, sorted by
	// path, each as PATH NUL MODE NUL VALUE NUL: PATH relative to the root
	// ("." for the root), MODE the st_mode in octal, VALUE the file's
	// "sha256:HEX", a symlink's target, or nothing.
	Digest string
	// Files and Bytes count the regular files and their size.
	Files int
	Bytes int64
	// Read and ReadBytes count the files whose content was read, because
	// the cache did not know them as they are.
	Read      int
	ReadBytes int64
}

// entry is one entry of a tree, as it goes into the digest.
type entry struct {
	path  string
	mode  uint32
	value string
}

// Tree returns the sum of the tree at root: a directory (whose symlinks are
// recorded, never followed) or a single file. Digests of files come from c
// when it knows them as they are, and go into it (c may be nil).
func Tree(ctx context.Context, root string, c *Cache) (Sum, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return Sum{}, err
	}
	var sum Sum
	var entries []entry
	seen := map[string]fileID{}
	if fi.Mode().IsRegular() {
		e, err := fileEntry(ctx, root, ".", c, seen, &sum, func() (*os.File, error) {
			return os.OpenFile(root, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		})
		if err != nil {
			return Sum{}, err
		}
		entries = append(entries, e)
	} else if entries, err = dirEntries(ctx, root, c, seen, &sum); err != nil {
		return Sum{}, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.path, b.path) })
	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%s\x00%o\x00%s\x00", e.path, e.mode, e.value)
	}
	sum.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if c != nil {
		if err := c.replace(root, seen); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// dirEntries lists the tree of directory root, reading it through an
// os.Root: nothing outside it is opened, whatever its symlinks say.
func dirEntries(ctx context.Context, root string, c *Cache, seen map[string]fileID, sum *Sum) ([]entry, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var entries []entry
	err = fs.WalkDir(r.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := r.Lstat(rel)
		if err != nil {
			return err
		}
		e := entry{path: rel, mode: stMode(fi)}
		switch {
		case fi.Mode().IsRegular():
			e, err = fileEntry(ctx, root+"/"+rel, rel, c, seen, sum, func() (*os.File, error) {
				return r.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
			})
		case fi.Mode()&fs.ModeSymlink != 0:
			e.value, err = r.Readlink(rel)
		}
		entries = append(entries, e)
		return err
	})
	return entries, err
}

// fileEntry is the entry of the regular file at path (rel in the tree),
// opened by open: its digest comes from the cache when the file, as opened,
// is the one the cache knows.
func fileEntry(ctx context.Context, path, rel string, c *Cache, seen map[string]fileID, sum *Sum, open func() (*os.File, error)) (entry, error) {
	f, err := open()
	if err != nil {
		return entry{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return entry{}, err
	}
	e := entry{path: rel, mode: stMode(fi)}
	if !fi.Mode().IsRegular() {
		return e, nil // replaced since it was listed: not read
	}
	id := identity(fi)
	sum.Files++
	sum.Bytes += fi.Size()
	if d, ok := c.lookup(path, id); ok {
		id.Digest = d
	} else {
		h := sha256.New()
		n, err := io.Copy(h, &ctxReader{ctx: ctx, r: f})
		if err != nil {
			return entry{}, fmt.Errorf("read %s: %w", path, err)
		}
		sum.Read++
		sum.ReadBytes += n
		id.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	}
	seen[path] = id
	e.value = id.Digest
	return e, nil
}

// stMode is fi's st_mode: type and permission bits as the kernel has them.
func stMode(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Mode
	}
	return uint32(fi.Mode())
}

// ctxReader stops reading once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
