package daemon

// The data dir's layout and the names gantryd gives what it creates.

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/gantry-ml/gantry/internal/joblog"
	"github.com/gantry-ml/gantry/runner"
)

func (d *Daemon) contextDir(id string) string { return filepath.Join(d.cfg.DataDir, "contexts", id) }

// LogPath is where job id's log lives: the build output, the training
// output and the push progress, in that order.
func (d *Daemon) LogPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "logs", id+".log")
}

// StatusPath is where job id's build status lives: BuildKit's status
// updates as JSON lines, for gantry watch to draw BuildKit's own display.
func (d *Daemon) StatusPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "logs", id+".build.jsonl")
}

// ProgressPath is where job id's push progress lives: typed records
// (gantry.Progress) as JSON lines, for gantry watch to draw its bar from.
func (d *Daemon) ProgressPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "logs", id+".progress.jsonl")
}

// SeriesPath is where job id's metric series live: a gantry.Series as
// JSON, out of the job's record so that reading records stays cheap;
// replaced whole while the job trains, and when it exits.
func (d *Daemon) SeriesPath(id string) string {
	return filepath.Join(d.cfg.DataDir, "metrics", id+".json")
}

// jobLog is a job's log, open for the run: its text goes through a
// joblog.Writer, which marks gantryd's own lines.
type jobLog struct {
	*joblog.Writer
	f *os.File
}

// Size is the log's length: where what is written next starts.
func (l *jobLog) Size() (int64, error) {
	fi, err := l.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (l *jobLog) Close() error { return l.f.Close() }

// openLog opens job id's log for appending; the followers of its path are
// woken by each write.
func (d *Daemon) openLog(id string) (*jobLog, error) {
	path := d.LogPath(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	atStart := true
	if fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
			f.Close()
			return nil, err
		}
		atStart = last[0] == '\n'
	}
	return &jobLog{Writer: joblog.NewWriter(f, atStart, func() { d.written.notify(path) }), f: f}, nil
}

func containerName(id string) string { return "gantry-" + id }

func (d *Daemon) labels(id string) map[string]string {
	return map[string]string{runner.LabelJob: id, runner.LabelDaemon: d.cfg.Instance}
}

// OutputsDir holds jobs' outputs, by content: each file under
// sha256/<hex>, shared by every job that produced the same bytes, and the
// layers built from them (for --outputs=layer) under layers/sha256/<hex>.
func (d *Daemon) OutputsDir() string { return filepath.Join(d.cfg.DataDir, "outputs") }

// outputBlob is where the output file with digest ("sha256:<hex>") is kept.
func (d *Daemon) outputBlob(digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(d.OutputsDir(), algo, hex)
}

// outputLayer is where the compressed output layer with digest is kept.
func (d *Daemon) outputLayer(digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(d.OutputsDir(), "layers", algo, hex)
}
