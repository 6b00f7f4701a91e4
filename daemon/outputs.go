package daemon

// Outputs: what training left in the output directory is copied out of the
// exited container, each file kept by content in the data dir, and listed in
// the record; gantry outputs reads them back as a tar stream.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
)

// The bounds of a job's outputs besides their size: the files are listed in
// the job's record (twice, once in its provenance), which the store caps at
// 1 MiB; an entry takes about 130 bytes besides its path, so 1,000 files
// of 100-byte paths take about 230k a copy. (10,000 would not fit.)
const (
	maxOutputFiles = 1000
	// maxOutputList bounds the list's size as the record encodes it (a path
	// JSON escapes grows up to sixfold).
	maxOutputList = 256 << 10
	// maxSkipLines bounds the lines naming skipped entries in the job log.
	maxSkipLines = 20
)

// outputCap is the outputs job j may keep: its own cap, or for a job
// recorded before jobs had one, the policy's (gantryd's default when the
// policy has none either).
func (d *Daemon) outputCap(j *gantry.Job) int64 {
	for _, n := range []int64{j.Spec.Resources.OutputBytes, d.cfg.Policy.Resources.OutputBytes} {
		if n > 0 {
			return n
		}
	}
	return 1 << 30
}

// outputDir is the output directory of job j (a record from before jobs had
// one: the default).
func outputDir(j *gantry.Job) string {
	if j.Spec.Outputs.Dir == "" {
		return gantry.DefaultOutputDir
	}
	return j.Spec.Outputs.Dir
}

// collectOutputs copies job j's output directory out of its exited
// container and keeps its files. A missing directory gives outputs with no
// files. When they cannot be kept (over a bound, or the engine failed), the
// outputs returned say why in Error, with no files: nothing partial is
// recorded. The error returned is ctx's alone: the job stopped (gantryd
// shutting down, or a cancel) and collects again when it resumes.
func (d *Daemon) collectOutputs(ctx context.Context, j *gantry.Job, logf *jobLog) (*gantry.Outputs, error) {
	dir := outputDir(j)
	failed := func(err error) (*gantry.Outputs, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		logf.Linef("==> outputs not kept: %v", err)
		return &gantry.Outputs{Dir: dir, Error: clip(err.Error(), maxReason)}, nil
	}
	rc, err := d.engine.CopyFrom(ctx, j.ContainerID, dir)
	if errors.Is(err, gantry.ErrNotFound) {
		logf.Linef("==> no outputs: training wrote nothing to %s", dir)
		return &gantry.Outputs{Dir: dir}, nil
	}
	if err != nil {
		return failed(fmt.Errorf("copy the outputs out of the container: %w", err))
	}
	defer rc.Close()
	k := &outputKeeper{d: d, dir: dir, limit: d.outputCap(j), logf: logf}
	outs, err := k.keep(rc)
	if err != nil {
		return failed(err)
	}
	if k.skipped > maxSkipLines {
		logf.Linef("==> outputs: %d more entries skipped", k.skipped-maxSkipLines)
	}
	logf.Linef("==> kept the outputs in %s: %d files, %s", dir, len(outs.Files), gantry.FormatBytes(outs.Bytes))
	return outs, nil
}

// outputKeeper keeps the files of one tar stream of an output directory.
type outputKeeper struct {
	d       *Daemon
	dir     string // in the container
	limit   int64  // bytes
	logf    *jobLog
	skipped int
}

// errOverCap is the error of outputs over their size cap.
func (k *outputKeeper) errOverCap() error {
	return fmt.Errorf("the outputs in %s hold over %s (gantryd's --max-output, or the job's): write less, or ask for more with --max-output",
		k.dir, gantry.FormatBytes(k.limit))
}

// keep reads a tar stream of k.dir as the engine sends it (its entries
// under the directory's base name) and keeps each regular file by content.
// Symlinks, devices and the like are skipped, and named in the job log; an
// entry outside the directory is refused. Over a bound, it returns an
// error naming it: blobs already kept stay (they are content-addressed, and
// another job may hold the same), but nothing is listed.
func (k *outputKeeper) keep(r io.Reader) (*gantry.Outputs, error) {
	byPath := map[string]gantry.OutputFile{}
	var total, listed int64
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the outputs copied from the container: %w", err)
		}
		rel, err := k.relative(hdr.Name)
		if err != nil {
			return nil, err
		}
		if rel == "" { // the directory itself
			if hdr.Typeflag != tar.TypeDir {
				return nil, fmt.Errorf("the output directory %s is not a directory: write the outputs into it", k.dir)
			}
			continue
		}
		var f gantry.OutputFile
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
			if total+hdr.Size > k.limit {
				return nil, k.errOverCap()
			}
			digest, n, err := k.d.keepBlob(tr)
			if err != nil {
				return nil, err
			}
			f = gantry.OutputFile{Path: rel, Size: n, Digest: digest, Mode: uint32(hdr.Mode) & 0o777}
		case tar.TypeLink:
			// A hard link to a file already read: the same content.
			target, err := k.relative(hdr.Linkname)
			kept, ok := byPath[target]
			if err != nil || !ok || total+kept.Size > k.limit {
				k.skip(rel, "a hard link to "+hdr.Linkname)
				continue
			}
			f = gantry.OutputFile{Path: rel, Size: kept.Size, Digest: kept.Digest, Mode: kept.Mode}
		default:
			k.skip(rel, entryKind(hdr))
			continue
		}
		// (A path seen twice, which the engine never sends, counts twice
		// against the bounds, and is listed once.)
		byPath[rel] = f
		total += f.Size
		entry, err := json.Marshal(f)
		if err != nil {
			return nil, err
		}
		listed += int64(len(entry)) + 1
		if len(byPath) > maxOutputFiles {
			return nil, fmt.Errorf("the outputs in %s hold over %d files, the most a job keeps (each is listed in its record): write fewer, e.g. one archive of them", k.dir, maxOutputFiles)
		}
		if listed > maxOutputList {
			return nil, fmt.Errorf("the outputs in %s have too many or too long paths to list in the job's record (over %s): use fewer files or shorter paths", k.dir, gantry.FormatBytes(maxOutputList))
		}
	}
	if err := k.d.syncBlobs(); err != nil {
		return nil, err
	}
	var files []gantry.OutputFile // nil for none, as the record reads back
	if len(byPath) > 0 {
		files = slices.SortedFunc(maps.Values(byPath), func(a, b gantry.OutputFile) int { return strings.Compare(a.Path, b.Path) })
	}
	outs := &gantry.Outputs{Dir: k.dir, Files: files}
	for _, f := range files {
		outs.Bytes += f.Size
	}
	return outs, nil
}

// relative is the path of a tar entry inside the output directory: its name
// less the directory's base name, which the engine puts first; "" for the
// directory itself. A name outside the directory (absolute, with "..", under
// another first name) is refused.
func (k *outputKeeper) relative(name string) (string, error) {
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	top, rest, _ := strings.Cut(clean, "/")
	if strings.HasPrefix(name, "/") || top != path.Base(k.dir) || slices.Contains(strings.Split(name, "/"), "..") {
		return "", fmt.Errorf("the copy of %s holds an entry outside it (%q): refused", k.dir, name)
	}
	return rest, nil
}

// skip names an entry that is not kept in the job log (the first few).
func (k *outputKeeper) skip(rel, kind string) {
	k.skipped++
	if k.skipped <= maxSkipLines {
		k.logf.Linef("==> outputs: skipped %s (%s): only regular files are kept", path.Join(k.dir, rel), kind)
	}
}

// entryKind names what a tar entry that is not kept is.
func entryKind(hdr *tar.Header) string {
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		return "a symlink to " + hdr.Linkname
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeFifo:
		return "a named pipe"
	}
	return fmt.Sprintf("an entry of type %q", hdr.Typeflag)
}

// keepBlob keeps the content r holds at its digest's path, and returns the
// digest and the size. It is written to a temporary file in the same
// directory, synced, and renamed into place (syncBlobs makes the renames
// durable); a blob already kept is not written again.
func (d *Daemon) keepBlob(r io.Reader) (string, int64, error) {
	dir := filepath.Dir(d.outputBlob("sha256:0"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, fmt.Errorf("keep outputs: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".in-*")
	if err != nil {
		return "", 0, fmt.Errorf("keep outputs: %w", err)
	}
	defer os.Remove(tmp.Name()) // once renamed, this fails harmlessly
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		return "", 0, fmt.Errorf("copy the outputs out of the container: %w", err)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if _, err := os.Stat(d.outputBlob(digest)); err == nil {
		return digest, n, nil
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("keep outputs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("keep outputs: %w", err)
	}
	if err := os.Rename(tmp.Name(), d.outputBlob(digest)); err != nil {
		return "", 0, fmt.Errorf("keep outputs: %w", err)
	}
	return digest, n, nil
}

// removePartialBlobs removes the temporary files of blobs a gantryd left
// half written; it runs before any job does.
func (d *Daemon) removePartialBlobs() {
	partial, _ := filepath.Glob(filepath.Join(filepath.Dir(d.outputBlob("sha256:0")), ".in-*"))
	for _, p := range partial {
		os.Remove(p)
	}
}

// syncBlobs makes the blobs' renames durable, before the record lists them.
func (d *Daemon) syncBlobs() error {
	f, err := os.Open(filepath.Dir(d.outputBlob("sha256:0")))
	if errors.Is(err, os.ErrNotExist) {
		return nil // no blob was written
	}
	if err != nil {
		return fmt.Errorf("keep outputs: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("keep outputs: %w", err)
	}
	return nil
}

// Outputs returns the outputs job id kept. It returns ErrNotFound for an
// unknown job or one that kept none, ErrConflict while its training has
// not ended.
func (d *Daemon) Outputs(ctx context.Context, id string) (*gantry.Outputs, error) {
	j, err := d.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return j.KeptOutputs()
}

// WriteOutputs writes the outputs job id kept to w as a tar stream: each
// file under its path in the output directory, with the mode recorded,
// owned by root, dated at the epoch, so that the same outputs give the same
// bytes. Each file's digest is checked as it is sent: on a mismatch (a blob
// changed on disk) WriteOutputs stops with an error, the archive left
// unfinished, and the file's bytes already sent; the caller ends the stream
// so that the reader sees it break. It returns the errors of Outputs.
func (d *Daemon) WriteOutputs(ctx context.Context, id string, w io.Writer) error {
	outs, err := d.Outputs(ctx, id)
	if err != nil {
		return err
	}
	return d.writeOutputsTar(ctx, outs, "", w)
}

// writeOutputsTar writes outs as a tar stream to w, under prefix (e.g.
// "output/" for a layer that puts them back where training wrote them),
// parent directories first, the prefix's own included.
func (d *Daemon) writeOutputsTar(ctx context.Context, outs *gantry.Outputs, prefix string, w io.Writer) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, f := range outs.Files {
		var parents []string
		for p := path.Dir(prefix + f.Path); p != "." && p != "/" && !dirs[p]; p = path.Dir(p) {
			parents = append(parents, p)
			dirs[p] = true
		}
		for _, p := range slices.Backward(parents) {
			if err := tw.WriteHeader(outputHeader(p+"/", tar.TypeDir, 0o755, 0)); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.sendBlob(tw, f, prefix); err != nil {
			return err
		}
	}
	return tw.Close()
}

// sendBlob writes file f's header and content to tw, checking its digest.
func (d *Daemon) sendBlob(tw *tar.Writer, f gantry.OutputFile, prefix string) error {
	blob, err := os.Open(d.outputBlob(f.Digest))
	if err != nil {
		return fmt.Errorf("output %s: %w", f.Path, err)
	}
	defer blob.Close()
	if err := tw.WriteHeader(outputHeader(prefix+f.Path, tar.TypeReg, int64(f.Mode), f.Size)); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.CopyN(tw, io.TeeReader(blob, h), f.Size); err != nil {
		return fmt.Errorf("output %s: %w", f.Path, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != f.Digest {
		return fmt.Errorf("output %s: the kept file's digest is %s, the record says %s: the data dir was changed", f.Path, got, f.Digest)
	}
	return nil
}

// outputHeader is a tar header of the outputs: root's, at the epoch.
func outputHeader(name string, typ byte, mode, size int64) *tar.Header {
	return &tar.Header{
		Name: name, Typeflag: typ, Mode: mode, Size: size,
		ModTime: time.Unix(0, 0),
	}
}

// dropFileLists leaves out of j the lists of its outputs' files (in the
// record and in its provenance), for a page of jobs: up to a thousand
// entries a job would make every page of gantry ls heavy. Get has them.
func dropFileLists(j *gantry.Job) {
	if j.Outputs != nil {
		o := *j.Outputs
		o.Files = nil
		j.Outputs = &o
	}
	if p := j.Provenance; p != nil && p.Outputs != nil {
		o := *p.Outputs
		o.Files = nil
		pc := *p
		pc.Outputs = &o
		j.Provenance = &pc
	}
}
