package daemon

// What a pruned job leaves in the data dir: its log, build status, push
// progress, metric series and build context, and the kept outputs (shared
// by content between jobs) that no remaining job references.

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gantry-ml/gantry"
)

// holdOutputs keeps prunes from removing kept outputs until the returned
// function is called: a job that keeps outputs (a blob another job kept
// already, say) holds it until its record lists them.
func (d *Daemon) holdOutputs() (release func()) {
	d.outputs.RLock()
	return d.outputs.RUnlock
}

// jobFiles are the files and directories of job id in the data dir.
func (d *Daemon) jobFiles(id string) []string {
	return []string{d.LogPath(id), d.StatusPath(id), d.ProgressPath(id), d.SeriesPath(id), d.contextDir(id)}
}

// outputRefs are the kept files job j's record references: its output
// files and its output layer.
func (d *Daemon) outputRefs(j *gantry.Job) []string {
	var paths []string
	for _, o := range []*gantry.Outputs{j.Outputs, provenanceOutputs(j)} {
		if o == nil {
			continue
		}
		for _, f := range o.Files {
			paths = append(paths, d.outputBlob(f.Digest))
		}
		if o.Layer != nil {
			paths = append(paths, d.outputLayer(o.Layer.Digest))
		}
	}
	return paths
}

func provenanceOutputs(j *gantry.Job) *gantry.Outputs {
	if j.Provenance == nil {
		return nil
	}
	return j.Provenance.Outputs
}

// pruneFiles removes (lists, for a dry run) the files of the jobs in
// remove, and the kept outputs no job in kept references: those of the
// removed jobs, and those no record ever listed (outputs over their cap
// leave theirs). d.outputs must be held, so that every output a job holds
// is in its record.
func (d *Daemon) pruneFiles(rep *gantry.PruneReport, remove, kept []*gantry.Job) {
	for _, j := range remove {
		for _, p := range d.jobFiles(j.ID) {
			d.pruneFile(rep, p, j.ID)
		}
	}
	held := map[string]bool{}
	for _, j := range kept {
		for _, p := range d.outputRefs(j) {
			held[p] = true
		}
	}
	for _, dir := range []string{filepath.Dir(d.outputBlob("sha256:0")), filepath.Dir(d.outputLayer("sha256:0"))} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && !held[p] {
				d.pruneFile(rep, p, "")
			}
		}
	}
}

// pruneFile removes path (a file or a directory) and lists it with its
// size; a path that is not there is skipped.
func (d *Daemon) pruneFile(rep *gantry.PruneReport, path, job string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return
	}
	size := fi.Size()
	if fi.IsDir() {
		size = treeSize(path)
	}
	if !rep.DryRun {
		if err := os.RemoveAll(path); err != nil {
			rep.Problems = append(rep.Problems, "remove "+path+": "+err.Error())
			return
		}
	}
	rep.Files = append(rep.Files, gantry.PrunedFile{Path: path, Job: job, Bytes: size})
	rep.Bytes += size
}

// treeSize is the size of the regular files under dir.
func treeSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
