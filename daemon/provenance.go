package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/gantry-ml/gantry"
)

// maxFileDigests and maxFileDigestBytes bound the per-file digests a job
// records (their count, and the bytes of their names), so that the record
// stays small; a larger context is pinned by its digest alone.
const (
	maxFileDigests     = 10000
	maxFileDigestBytes = 256 << 10
)

// fileDigests returns the sha256 of every regular file under dir, by its
// slash-separated path, or nil for a context over maxFileDigests files or
// maxFileDigestBytes of names. Hard links to one file are read once.
func fileDigests(dir string) (map[string]string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	out := map[string]string{}
	byInode := map[[2]uint64]string{}
	names := 0
	tooMany := errors.New("too many files to record")
	err = fs.WalkDir(root.FS(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		if names += len(p); len(out) >= maxFileDigests || names > maxFileDigestBytes {
			return tooMany
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		var ino [2]uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			ino = [2]uint64{uint64(st.Dev), st.Ino}
			if d, ok := byInode[ino]; ok {
				out[p] = d
				return nil
			}
		}
		d, err := hashFile(root, p)
		if err != nil {
			return err
		}
		out[p] = d
		if ino != ([2]uint64{}) {
			byInode[ino] = d
		}
		return nil
	})
	if errors.Is(err, tooMany) {
		return nil, nil
	}
	return out, err
}

// hashFile is digestFile; tests count its calls.
var hashFile = digestFile

func digestFile(root *os.Root, name string) (string, error) {
	f, err := root.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// resolveBases pins the base images a build named by the engine's image ID
// each resolved to.
func (d *Daemon) resolveBases(ctx context.Context, refs []string) []gantry.Base {
	var out []gantry.Base
	for _, ref := range refs {
		b := gantry.Base{Ref: ref}
		if digest, err := d.engine.ImageID(ctx, ref); err == nil {
			b.Digest = digest
		}
		out = append(out, b)
	}
	return out
}

// History returns the jobs that pushed to the image name (a repository,
// "127.0.0.1:5000/iris"), newest first, each marked whether name:tag holds
// its image now. It returns ErrInvalid for a bad name or tag.
//
// Only a registry that a job of this gantryd pushed to is asked which image
// the tag holds: a name nobody pushed to gives the records alone (for an
// unknown name, none), so that the call cannot make gantryd connect to any
// host and port a client names.
func (d *Daemon) History(ctx context.Context, name, tag string) ([]gantry.HistoryEntry, error) {
	if tag == "" {
		tag = "latest"
	}
	if _, err := gantry.ParseRef(name + ":" + tag); err != nil {
		return nil, err
	}
	// Compare repositories as go-containerregistry names them, as the
	// records of pushes and promotions do ("user/repo" is
	// "index.docker.io/user/repo").
	name = gantry.Repository(name)
	out, pushed, err := d.history(ctx, name, tag)
	if err != nil || !pushed {
		return out, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	champion, err := d.pusher.Resolve(rctx, name+":"+tag)
	if err != nil && !errors.Is(err, gantry.ErrNotFound) {
		return nil, err
	}
	for i := range out {
		out[i].Champion = out[i].Digest != "" && out[i].Digest == champion
	}
	return out, nil
}

// history returns the records of the jobs that pushed to the image name, and
// whether one of them recorded a push there (a push that gantryd did, to
// that repository, so of that registry).
func (d *Daemon) history(ctx context.Context, name, tag string) ([]gantry.HistoryEntry, bool, error) {
	var out []gantry.HistoryEntry
	pushed := false
	before := ""
	for {
		jobs, next, err := d.store.List(ctx, gantry.JobFilter{Limit: 1000, Before: before})
		if err != nil {
			return nil, false, err
		}
		for _, j := range jobs {
			if j.Name() != name && !pushedTo(j, name) {
				continue
			}
			e := gantry.HistoryEntry{Job: j.ID, Created: j.Times.Created, State: j.State, Accuracy: j.Metrics.Accuracy, Reason: j.Error}
			if o, err := gantry.ParseObjective(j.Spec.PromoteOn); err == nil && o.Metric != gantry.DefaultObjective.Metric {
				e.Metric = o.Metric
				if v, ok := j.Metrics.Value(o.Metric); ok {
					e.Value = &v
				}
			}
			for _, p := range j.Pushes {
				if gantry.Repository(p.Ref) == name {
					e.Digest = p.Digest
					pushed = true
				}
			}
			for _, p := range j.Promotions {
				if p.Tag == name+":"+tag {
					e.Reason = p.Reason
				}
			}
			out = append(out, e)
		}
		if next == "" {
			return out, pushed, nil
		}
		before = next
	}
}

func pushedTo(j *gantry.Job, name string) bool {
	for _, r := range j.Spec.Push {
		if gantry.Repository(r) == name {
			return true
		}
	}
	return false
}
