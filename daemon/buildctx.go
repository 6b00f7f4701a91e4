package daemon

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/gantry-ml/gantry"
)

// Limits bound what a submitted build context may hold.
type Limits struct {
	// MaxBytes caps the total size of the files in the context.
	MaxBytes int64
	// MaxEntries caps the number of tar entries.
	MaxEntries int
}

// unpack writes the tar stream r into dir, which must exist and be empty.
// Every write goes through an os.Root, so no entry (nor a symlink an earlier
// entry made) can reach outside dir. Entries with absolute paths or "..",
// device files, and streams over the limits are refused with ErrInvalid or
// ErrTooLarge; the caller removes dir then. It returns the bytes of file
// content written.
func unpack(r io.Reader, dir string, lim Limits) (int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("build context: %w", err)
	}
	defer root.Close()
	u := &unpacker{root: root, lim: lim}
	src := &eofReader{r: r}
	tr := tar.NewReader(src)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return u.end(n, src.eof)
		}
		if err != nil {
			return 0, gantry.Errorf(gantry.ErrInvalid, "build context: not a valid tar stream: %v", err)
		}
		if n >= lim.MaxEntries {
			return 0, gantry.Errorf(gantry.ErrTooLarge, "build context: more than %d entries (add what the build does not need to .dockerignore)", lim.MaxEntries)
		}
		if err := u.entry(h, tr); err != nil {
			return 0, err
		}
	}
}

// unpacker is one unpacking under way: the root it writes through, the
// bytes written so far, and the symlinks made, to check on the final tree.
type unpacker struct {
	root  *os.Root
	lim   Limits
	total int64
	links []string
}

// end checks the stream that ended after n entries, and returns the bytes
// written.
func (u *unpacker) end(n int, eof bool) (int64, error) {
	if n == 0 {
		return 0, gantry.Errorf(gantry.ErrInvalid, "build context: the tar stream is empty (send the context directory as a tar archive)")
	}
	// tar.Reader takes a stream that stops cleanly between entries for a
	// whole one: only the end-of-archive marker ends it.
	if eof {
		return 0, gantry.Errorf(gantry.ErrInvalid, "build context: the tar stream ends after %d entries without the end-of-archive marker: it was cut short", n)
	}
	// A later entry can change where an earlier symlink leads (a link
	// through a link): check them all on the final tree.
	for _, l := range u.links {
		target, err := u.root.Readlink(l)
		if err != nil || !inside(u.root, l, target) {
			return 0, outsideErr("symlink", l, target)
		}
	}
	return u.total, nil
}

// entry writes one entry of the stream.
func (u *unpacker) entry(h *tar.Header, tr io.Reader) error {
	name, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	if name == "." {
		return nil
	}
	if err := makeParents(u.root, name); err != nil {
		return err
	}
	mode := os.FileMode(h.Mode).Perm()
	switch h.Typeflag {
	case tar.TypeDir:
		if err := u.root.Mkdir(name, mode|0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return entryErr(h.Name, err)
		}
	case tar.TypeReg:
		return u.file(h, name, mode, tr)
	case tar.TypeSymlink:
		if !inside(u.root, name, h.Linkname) {
			return outsideErr("symlink", h.Name, h.Linkname)
		}
		if err := u.root.Symlink(h.Linkname, name); err != nil {
			return entryErr(h.Name, err)
		}
		u.links = append(u.links, name)
	case tar.TypeLink:
		return u.hardlink(h, name)
	case tar.TypeXGlobalHeader, tar.TypeXHeader:
	default:
		return gantry.Errorf(gantry.ErrInvalid, "build context: entry %q is a %s; only files, directories and links may be sent", h.Name, typeName(h.Typeflag))
	}
	return nil
}

func (u *unpacker) file(h *tar.Header, name string, mode os.FileMode, tr io.Reader) error {
	if h.Size < 0 || h.Size > u.lim.MaxBytes-u.total {
		return gantry.Errorf(gantry.ErrTooLarge, "build context: entry %q takes it over the limit of %d bytes (add what the build does not need to .dockerignore)", h.Name, u.lim.MaxBytes)
	}
	f, err := u.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode|0o600)
	if err != nil {
		return entryErr(h.Name, err)
	}
	n, err := io.Copy(f, tr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return gantry.Errorf(gantry.ErrInvalid, "build context: entry %q: %v", h.Name, err)
	}
	u.total += n
	return nil
}

func (u *unpacker) hardlink(h *tar.Header, name string) error {
	old, err := cleanName(h.Linkname)
	if err != nil {
		return outsideErr("hardlink", h.Name, h.Linkname)
	}
	if err := u.root.Link(old, name); err != nil {
		return entryErr(h.Name, err)
	}
	// A hard link to a symlink is that symlink read from a new place: check
	// it with the others.
	if fi, err := u.root.Lstat(name); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		u.links = append(u.links, name)
	}
	return nil
}

// cleanName returns the tar entry name as a clean relative path, refusing
// absolute paths and any ".." component.
func cleanName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") {
		return "", gantry.Errorf(gantry.ErrInvalid, "build context: entry %q: absolute or empty paths are not allowed", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", gantry.Errorf(gantry.ErrInvalid, "build context: entry %q: paths with .. are not allowed", name)
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", gantry.Errorf(gantry.ErrInvalid, "build context: entry %q: NUL in name", name)
	}
	return path.Clean(name), nil
}

// maxLinks bounds how many symlinks inside follows, as the kernel's
// ELOOP limit does.
const maxLinks = 255

// inside reports whether the symlink name -> target, resolved in root the way
// the kernel would (following the symlinks root already holds), stays inside
// root. A component that does not exist yet counts as a directory.
func inside(root *os.Root, name, target string) bool {
	if path.IsAbs(target) {
		return false
	}
	parts := strings.Split(path.Dir(name)+"/"+target, "/")
	var cur []string
	for followed := 0; len(parts) > 0; {
		p := parts[0]
		parts = parts[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return false
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := strings.Join(append(cur, p), "/")
		if fi, err := root.Lstat(next); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if followed++; followed > maxLinks {
				return false
			}
			t, err := root.Readlink(next)
			if err != nil || path.IsAbs(t) {
				return false
			}
			parts = append(strings.Split(t, "/"), parts...)
			continue
		}
		cur = append(cur, p)
	}
	return true
}

func outsideErr(kind, name, target string) error {
	return gantry.Errorf(gantry.ErrInvalid, "build context: %s %q points outside the context (%q)", kind, name, target)
}

// makeParents creates the directories above name that the archive did not
// list itself (tar streams need not list them).
func makeParents(root *os.Root, name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return entryErr(name, err)
	}
	return nil
}

func entryErr(name string, err error) error {
	return gantry.Errorf(gantry.ErrInvalid, "build context: entry %q: %v", name, err)
}

func typeName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "named pipe"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

// eofReader records whether its reader came to its end with nothing read,
// which is how a tar stream cut between two entries looks.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if n == 0 && err == io.EOF {
		e.eof = true
	}
	return n, err
}
