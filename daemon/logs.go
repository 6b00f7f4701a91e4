package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/gantry-ml/gantry/push"
	"github.com/gantry-ml/gantry/trainer"
)

func validRef(s string) error {
	_, err := push.ParseRef(s)
	return err
}

func validRegex(s string) error {
	_, err := trainer.Compile(s)
	return err
}

// maxLine is the longest line handed to the metric reader (the reader's
// own bound); a longer line still goes to the log, but is not examined.
const maxLine = trainer.MaxLine

// pollInterval is how often a followed log is checked for more output.
const pollInterval = 100 * time.Millisecond

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

// tail copies the file at path, which belongs to job id, to w; with follow,
// it waits for the file to appear and keeps copying as it grows until the
// job has ended and all of it is written.
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
		// A change of the job's record (its end) wakes the follower at
		// once; new output is polled for.
		changed := d.changed.wait()
		// Read the state before copying: a job seen terminal here has
		// written its whole log, so the copy that follows gets all of it.
		j, err := d.store.Get(ctx, id)
		if err != nil {
			return err
		}
		done := j.State.Terminal() || !follow
		if f == nil {
			f, err = os.Open(path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return err
			}
			flush()
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-time.After(pollInterval):
		}
	}
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
// lost or repeated. A log without the marker gets it appended.
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

// capWriter passes on the first left bytes, then says once that the rest is
// dropped, and drops it. It never fails a write for being over the cap.
type capWriter struct {
	w    io.Writer
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
		io.WriteString(c.w, "\n==> the training output ran over the log's cap; the rest is not kept\n")
	}
	return n, nil
}
