package treesum

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Cache remembers the digests of files by their identity, in a JSON file
// read when first used and rewritten after each tree. A file whose path,
// device, inode, size, mtime and ctime are as recorded is not read again
// (ctime cannot be set back by a user, as mtime can). A Cache is safe for
// concurrent use.
type Cache struct {
	path   string
	mu     sync.Mutex
	loaded bool
	files  map[string]fileID
}

// fileID is what the cache knows of one file: who it is, and its digest.
type fileID struct {
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Size   int64  `json:"size"`
	Mtime  int64  `json:"mtime_ns"`
	Ctime  int64  `json:"ctime_ns"`
	Digest string `json:"digest"`
}

// cacheFile is the cache as stored.
type cacheFile struct {
	Version int               `json:"version"`
	Files   map[string]fileID `json:"files"`
}

const cacheVersion = 1

// NewCache returns the cache kept in the file at path (made when first
// written; a file that is missing or unreadable starts it empty).
func NewCache(path string) *Cache { return &Cache{path: path} }

// identity is who the file fi is, without its digest.
func identity(fi fs.FileInfo) fileID {
	id := fileID{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.Dev, id.Ino = uint64(st.Dev), st.Ino
		id.Ctime = st.Ctim.Nano()
	}
	return id
}

// lookup returns the digest of the file at path when the cache knows it as
// id says it is. A nil cache knows nothing.
func (c *Cache) lookup(path string, id fileID) (string, bool) {
	if c == nil {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	got, ok := c.files[path]
	if !ok || got.Digest == "" {
		return "", false
	}
	want := got
	want.Digest = ""
	return got.Digest, want == id
}

// load reads the file once; d.mu must be held.
func (c *Cache) load() {
	if c.loaded {
		return
	}
	c.loaded = true
	c.files = map[string]fileID{}
	data, err := os.ReadFile(c.path)
	if err != nil {
		return
	}
	var f cacheFile
	if json.Unmarshal(data, &f) == nil && f.Version == cacheVersion && f.Files != nil {
		c.files = f.Files
	}
}

// replace makes seen what the cache knows of the tree at root (what it knew
// of files under root that are gone is dropped), and writes it.
func (c *Cache) replace(root string, seen map[string]fileID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	for p := range c.files {
		if p == root || strings.HasPrefix(p, root+"/") {
			delete(c.files, p)
		}
	}
	for p, id := range seen {
		c.files[p] = id
	}
	data, err := json.Marshal(cacheFile{Version: cacheVersion, Files: c.files})
	if err != nil {
		return err
	}
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Rename(tmp, c.path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(c.path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
