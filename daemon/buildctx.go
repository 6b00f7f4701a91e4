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
	var total int64
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return 0, gantry.Errorf(gantry.ErrInvalid, "build context: the tar stream is empty (send the context directory as a tar archive)")
			}
			return total, nil
		}
		if err != nil {
			return 0, gantry.Errorf(gantry.ErrInvalid, "build context: not a valid tar stream: %v", err)
		}
		if n >= lim.MaxEntries {
			return 0, gantry.Errorf(gantry.ErrTooLarge, "build context: more than %d entries (add what the build does not need to .dockerignore)", lim.MaxEntries)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return 0, err
		}
		if name == "." {
			continue
		}
		if err := makeParents(root, name); err != nil {
			return 0, err
		}
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, mode|0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return 0, entryErr(h.Name, err)
			}
		case tar.TypeReg:
			if total+h.Size > lim.MaxBytes || h.Size < 0 {
				return 0, gantry.Errorf(gantry.ErrTooLarge, "build context: larger than the limit of %d bytes (add what the build does not need to .dockerignore)", lim.MaxBytes)
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode|0o600)
			if err != nil {
				return 0, entryErr(h.Name, err)
			}
			n, err := io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return 0, gantry.Errorf(gantry.ErrInvalid, "build context: entry %q: %v", h.Name, err)
			}
			total += n
		case tar.TypeSymlink:
			target := h.Linkname
			if path.IsAbs(target) || escapes(path.Dir(name), target) {
				return 0, gantry.Errorf(gantry.ErrInvalid, "build context: symlink %q points outside the context (%q)", h.Name, target)
			}
			if err := root.Symlink(target, name); err != nil {
				return 0, entryErr(h.Name, err)
			}
		case tar.TypeLink:
			old, err := cleanName(h.Linkname)
			if err != nil {
				return 0, err
			}
			if err := root.Link(old, name); err != nil {
				return 0, entryErr(h.Name, err)
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
			continue
		default:
			return 0, gantry.Errorf(gantry.ErrInvalid, "build context: entry %q is a %s; only files, directories and links may be sent", h.Name, typeName(h.Typeflag))
		}
	}
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

// escapes reports whether the relative symlink target, resolved lexically
// from dir, leaves the context root. (Writes are confined by os.Root anyway;
// this refuses links that could only ever point outside.)
func escapes(dir, target string) bool {
	j := path.Join(dir, target)
	return j == ".." || strings.HasPrefix(j, "../")
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
