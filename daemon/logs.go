package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/gantry-ml/gantry/trainer"
)

// maxLine is the longest line handed to the metric reader (the reader's
// own bound); a longer line still goes to the log, but is not examined.
const maxLine = trainer.MaxLine

// Logs copies job id's log to w. With follow, it waits for a queued job to
// start, keeps copying as the log grows, and returns once the job has ended
// and its whole log is written. It returns ErrNotFound for an unknown job.
func (d *Daemon) Logs(ctx context.Context, id string, follow bool, w io.Writer) error {
	return d.tail(ctx, id, d.LogPath(id), follow, w)
}

// BuildStatus copies job id's build status (JSON lines of BuildKit's
// client.SolveStatus) to w; with follow, until the job ends. It returns
// ErrNotFound for an unknown job.
func (d *Daemon) BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error {
	return d.tail(ctx, id, d.StatusPath(id), follow, w)
}

// Progress copies job id's push progress (JSON lines of gantry.Progress)
// to w; with follow, until the job ends. It returns ErrNotFound for an
// unknown job.
func (d *Daemon) Progress(ctx context.Context, id string, follow bool, w io.Writer) error {
	return d.tail(ctx, id, d.ProgressPath(id), follow, w)
}

// tail copies the file at path, which belongs to job id, to w; with follow,
// it waits for the file to appear and keeps copying as it grows until the
// job has ended and all of it is written. A follower waits, with no timer,
// for a write to the file (d.written) or a change of the job's record
// (d.changed), so an idle follower costs nothing.
func (d *Daemon) tail(ctx context.Context, id, path string, follow bool, w io.Writer) error {
	if _, err := d.store.Get(ctx, id); err != nil {
		return err
	}
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	flush := func() {
		if fl, ok := w.(interface{ Flush() }); ok {
			fl.Flush()
		}
	}
	for {
		// Wait for both before reading: no write or change falls between
		// the read and the wait.
		changed := d.changed.wait()
		written, release := d.written.wait(path)
		// Read the state before copying: a job seen terminal here has
		// written its whole log, so the copy that follows gets all of it.
		j, err := d.store.Get(ctx, id)
		if err != nil {
			release()
			return err
		}
		done := j.State.Terminal() || !follow
		if err := d.copyFile(&f, path, w); err != nil {
			release()
			return err
		}
		flush()
		if done {
			release()
			return nil
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-written:
		}
		release()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// copyFile copies to w what the file at path holds past *f's offset,
// opening it into *f first when it exists by now.
func (d *Daemon) copyFile(f **os.File, path string, w io.Writer) error {
	if d.onTailRead != nil {
		d.onTailRead(path)
	}
	if *f == nil {
		var err error
		if *f, err = os.Open(path); errors.Is(err, os.ErrNotExist) {
			*f = nil
			return nil
		} else if err != nil {
			*f = nil
			return err
		}
	}
	_, err := io.Copy(w, *f)
	return err
}

// fileNotifier wakes the followers of a file when it is written. Entries
// live only while someone waits.
type fileNotifier struct {
	mu sync.Mutex
	m  map[string]*fileWaiters
}

type fileWaiters struct {
	ch chan struct{} // closed at the next write
	n  int
}

// wait returns a channel closed at the next notify of path, and the
// function to call once done waiting on it.
func (n *fileNotifier) wait(path string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]*fileWaiters{}
	}
	fw := n.m[path]
	if fw == nil {
		fw = &fileWaiters{ch: make(chan struct{})}
		n.m[path] = fw
	}
	fw.n++
	return fw.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if fw.n--; fw.n == 0 && n.m[path] == fw {
			delete(n.m, path)
		}
	}
}

// notify wakes everyone waiting on path.
func (n *fileNotifier) notify(path string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if fw := n.m[path]; fw != nil {
		close(fw.ch)
		delete(n.m, path)
	}
}

// notifyWriter tells a fileNotifier of each write to a file.
type notifyWriter struct {
	w    io.Writer
	path string
	n    *fileNotifier
}

// notifying returns w, the file at path, waking its followers after each
// write.
func (d *Daemon) notifying(w io.Writer, path string) io.Writer {
	return notifyWriter{w: w, path: path, n: &d.written}
}

func (w notifyWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n.notify(w.path)
	return n, err
}

// countWriter counts the bytes that pass through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// cutLog cuts the log at path back to the end of its last marker line, so
// that a container log replayed from the start follows it without a line
// lost or repeated. A log without the marker gets it appended. The marker
// is a line of gantryd's own (joblog.Line): no output of a build or a
// training program can hold it.
func cutLog(path, marker string) error {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	i := bytes.LastIndex(data, []byte(marker))
	if i < 0 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		if len(data) > 0 && data[len(data)-1] != '\n' {
			marker = "\n" + marker
		}
		_, err = io.WriteString(f, marker)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return os.Truncate(path, int64(i+len(marker)))
}

// capWriter passes on the first left bytes, then says once (with note)
// that the rest is dropped, and drops it. It never fails a write for being
// over the cap.
type capWriter struct {
	w    io.Writer
	note func()
	left int64
	said bool
}

func (c *capWriter) Write(p []byte) (int, error) {
	n := len(p)
	if c.left > 0 {
		k := min(int64(len(p)), c.left)
		if _, err := c.w.Write(p[:k]); err != nil {
			return 0, err
		}
		c.left -= k
		p = p[k:]
	}
	if len(p) > 0 && !c.said {
		c.said = true
		c.note()
	}
	return n, nil
}
