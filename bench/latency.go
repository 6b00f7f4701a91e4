package main

// Case 5, continued: how fast a change reaches a watcher, and the disk's own
// fsync latency, which admission's figures are to be judged by.

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gantry-ml/gantry"
)

// fsyncLatency writes 4 KiB and fdatasyncs it, as bbolt commits a record,
// 300 times in dir (gantryd's data directory), on an otherwise quiet
// gantryd, and returns the latencies in milliseconds.
func fsyncLatency(dir string) ([]float64, error) {
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	page := make([]byte, 4096)
	ms := make([]float64, 0, 300)
	for i := range cap(ms) {
		page[0] = byte(i)
		if _, err := f.WriteAt(page, int64(i%64)*4096); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return nil, err
		}
		ms = append(ms, float64(time.Since(t0))/float64(time.Millisecond))
	}
	return ms, nil
}

// diskFsync measures the disk gantryd's data directory is on, once a run.
func (b *bench) diskFsync(dir string, run int) error {
	ms, err := fsyncLatency(dir)
	if err != nil {
		return fmt.Errorf("fsync latency: %w", err)
	}
	p50, p99 := percentile(ms, 0.50), percentile(ms, 0.99)
	b.res.add("api/fsync-p50", gantrySide, p50)
	b.res.add("api/fsync-p99", gantrySide, p99)
	log.Printf("disk %d/%d: fsync of 4 KiB in the data dir: p50 %.2f ms, p99 %.2f ms", run, b.cfg.runs, p50, p99)
	return nil
}

// sseJobs is how many jobs one run of sseLatency watches.
const sseJobs = 30

// sseLatency follows gantryd's event stream (GET /v1/events, SSE) while
// sseJobs jobs a run run one after another, and takes for every event the
// time from the change (the event's time, taken when gantryd records it) to
// this client having read it. Each job is submitted when the stream has
// shown the one before it end: the stream is the only waiter.
func (b *bench) sseLatency(ctx context.Context) error {
	d, err := b.startDaemon(ctx, "sse", "", "--max-jobs", "1")
	if err != nil {
		return err
	}
	defer d.stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu sync.Mutex
		ms []float64
	)
	ended := make(chan gantry.Event, 1)
	stream := make(chan error, 1)
	go func() {
		stream <- d.client.Events(sctx, 0, "", true, func(e gantry.Event) error {
			l := float64(time.Since(e.Time)) / float64(time.Millisecond)
			mu.Lock()
			ms = append(ms, l)
			mu.Unlock()
			if e.Type == gantry.EventState && e.State.Terminal() {
				ended <- e
			}
			return nil
		})
	}()
	tarball := b.trueContext()
	for run := 1; run <= b.cfg.runs; run++ {
		for i := range sseJobs {
			j, err := submit(ctx, d.client, tarball)
			if err != nil {
				return err
			}
			select {
			case e := <-ended:
				if e.Job != j.ID || e.State != gantry.StateSucceeded {
					return fmt.Errorf("job %s ended %s (%s); want job %s, succeeded", e.Job, e.State, e.Error, j.ID)
				}
			case err := <-stream:
				return fmt.Errorf("the event stream ended after %d jobs: %v", i, err)
			}
		}
		mu.Lock()
		got := ms
		ms = nil
		mu.Unlock()
		p50, p99 := percentile(got, 0.50), percentile(got, 0.99)
		b.res.add("api/sse-p50", gantrySide, p50)
		b.res.add("api/sse-p99", gantrySide, p99)
		b.res.Raw[fmt.Sprintf("api/sse-latency-ms/run-%d", run)] = got
		log.Printf("sse %d/%d: %d events of %d jobs: change → client p50 %.2f ms, p99 %.2f ms", run, b.cfg.runs, len(got), sseJobs, p50, p99)
	}
	return nil
}
