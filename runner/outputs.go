package runner

// The output directory of a local run: a volume of the run's own, read
// straight from the engine's host when gantryd is on it, else copied out
// through the engine (docker cp), which mounts the stopped container's
// filesystem first and costs a good part of a second.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/moby/moby/api/types/mount"

	"github.com/gantry-ml/gantry"
)

// OutputDir is the output directory env gives a run (the last
// GANTRY_OUTPUT_DIR), or "" when none.
func OutputDir(env []string) string {
	dir := ""
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == gantry.OutputDirEnv {
			dir = v
		}
	}
	return dir
}

// outputMount returns the mount of s's output directory: an anonymous
// volume, filled from the image as `docker run -v DIR` fills one and
// removed with the container (Remove removes its volumes). There is none
// (ok false) when s has no output directory, when a mount of s lies on it,
// or when the image runs as another user than root: a directory the image
// lacks is made root's by the engine, and such a trainer could not write
// in it, where it could make it itself without the volume.
func (e *Engine) outputMount(ctx context.Context, s Spec) (mount.Mount, bool) {
	dir := OutputDir(s.Env)
	if dir == "" || !path.IsAbs(dir) || path.Clean(dir) == "/" {
		return mount.Mount{}, false
	}
	dir = path.Clean(dir)
	for _, m := range s.Mounts {
		t := path.Clean(m.Target)
		if t == dir || strings.HasPrefix(t, dir+"/") || strings.HasPrefix(dir, t+"/") {
			return mount.Mount{}, false
		}
	}
	img, err := e.c.ImageInspect(ctx, s.Image)
	if err != nil || img.Config == nil || !rootUser(img.Config.User) {
		return mount.Mount{}, false
	}
	return mount.Mount{Type: mount.TypeVolume, Target: dir}, true
}

// rootUser reports whether an image's USER is root.
func rootUser(u string) bool {
	name, _, _ := strings.Cut(u, ":")
	return name == "" || name == "root" || name == "0"
}

// copyFromVolume is CopyFrom for a path that is a volume of container id
// whose directory gantryd can read on this host: a tar stream of it made
// here, in docker cp's shape. ok is false when that is not so (gantryd is
// not on the engine's host, or path is not such a volume), and the engine
// is to copy it. An empty directory is ErrNotFound, as a path the training
// never made is. The container has exited: nothing changes the directory
// while it is read, and every entry is opened without following a link.
func (e *Engine) copyFromVolume(ctx context.Context, id, p string) (rc io.ReadCloser, ok bool, err error) {
	if !strings.HasPrefix(e.c.DaemonHost(), "unix://") {
		return nil, false, nil
	}
	insp, err := e.inspect(ctx, id)
	if err != nil || insp.State == nil || insp.State.Running {
		return nil, false, nil
	}
	p = path.Clean(p)
	src := ""
	for _, m := range insp.Mounts {
		if m.Type == mount.TypeVolume && path.Clean(m.Destination) == p {
			src = m.Source
		}
	}
	if src == "" {
		return nil, false, nil
	}
	root, err := os.OpenRoot(src)
	if err != nil {
		return nil, false, nil // not on this host's filesystem (gantryd in a container)
	}
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		root.Close()
		return nil, false, nil
	}
	if len(entries) == 0 {
		root.Close()
		return nil, true, gantry.Errorf(gantry.ErrNotFound, "%s: nothing in it in container %.12s", p, id)
	}
	pr, pw := io.Pipe()
	go func() {
		defer root.Close()
		pw.CloseWithError(tarDir(ctx, root, path.Base(p), pw))
	}()
	return pr, true, nil
}

// tarDir writes the tree under root to w as a tar stream whose entries are
// under base, as the engine's archive of a directory is: directories,
// regular files with their content, and links, devices and pipes as
// headers alone (the reader skips those).
func tarDir(ctx context.Context, root *os.Root, base string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := fs.WalkDir(root.FS(), ".", func(rel string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := de.Info() // lstat: a link is not followed
		if err != nil {
			return err
		}
		name := path.Join(base, rel)
		switch t := fi.Mode().Type(); {
		case t == 0:
			return tarFile(tw, root, rel, name)
		case t == fs.ModeSymlink:
			target, err := root.Readlink(rel)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: fi.ModTime()})
		case t == fs.ModeSocket:
			return nil // the engine's archive leaves sockets out too
		default:
			h, err := tar.FileInfoHeader(fi, "")
			if err != nil {
				return err
			}
			h.Name = name
			if t == fs.ModeDir {
				h.Name += "/"
			}
			return tw.WriteHeader(h)
		}
	})
	if err != nil {
		return fmt.Errorf("read the output directory: %w", err)
	}
	return tw.Close()
}

// tarFile writes the regular file rel as name, checking once it is open
// that it is the regular file it was listed as.
func tarFile(tw *tar.Writer, root *os.Root, rel, name string) error {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s changed while it was read", rel)
	}
	h, err := tar.FileInfoHeader(fi, "")
	if err != nil {
		return err
	}
	h.Name = name
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(tw, io.LimitReader(f, fi.Size()))
	if err == nil && n != fi.Size() {
		err = errors.New("it shrank while it was read")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}
