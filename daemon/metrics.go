package daemon

// The metric series: each job's in a file of its own (SeriesPath), out of
// the record, so that listing jobs stays as cheap as it was.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/trainer"
)

// seriesEvery is how often, at most, a training job's series file is
// rewritten while points come in: often enough for a live curve, and a
// bounded cost (a series is bounded too) whatever the output's rate.
const seriesEvery = time.Second

// Metrics returns job id's metric series, or with name only that metric's;
// an empty Series while there is none. It returns ErrNotFound for an
// unknown job and ErrInvalid for a name no metric may have.
func (d *Daemon) Metrics(ctx context.Context, id, name string) (gantry.Series, error) {
	if name != "" {
		if err := gantry.CheckMetricName(name); err != nil {
			return nil, err
		}
	}
	if _, err := d.store.Get(ctx, id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.SeriesPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return gantry.Series{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics of job %s: %w", id, err)
	}
	s := gantry.Series{}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("metrics of job %s: %s is damaged: %w", id, d.SeriesPath(id), err)
	}
	if name != "" {
		one := gantry.Series{}
		if pts, ok := s[name]; ok {
			one[name] = pts
		}
		s = one
	}
	return s, nil
}

// writeSeries replaces job id's series file with s, atomically: a reader
// sees the old file or the new one. With sync, the file is on disk before
// writeSeries returns (the record that follows must not outlive it).
func (d *Daemon) writeSeries(id string, s gantry.Series, sync bool) error {
	path := d.SeriesPath(id)
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), id+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	_, err = tmp.Write(b)
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// keepSeries rewrites job id's series file from r every seriesEvery while
// points come in, until the function it returns is called (once or more);
// that function returns once no write is under way.
func (d *Daemon) keepSeries(id string, r *trainer.Reader) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(seriesEvery)
		defer tick.Stop()
		var written int64
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if n := r.Points(); n != written {
				if err := d.writeSeries(id, r.Series(), false); err != nil {
					d.log.Warn("write metric series", "job", id, "err", err)
					continue
				}
				written = n
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-stopped
	}
}
