package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/gantry-ml/gantry"
)

// broadcaster wakes everyone waiting when something changed.
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel that is closed at the next notify.
func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// notifyingStore tells the broadcaster of every write, so that event
// streams wake up instead of polling.
type notifyingStore struct {
	jobStore
	changed *broadcaster
}

func (s *notifyingStore) Create(ctx context.Context, j *gantry.Job) error {
	err := s.jobStore.Create(ctx, j)
	s.changed.notify()
	return err
}

func (s *notifyingStore) Update(ctx context.Context, id string, fn func(*gantry.Job) error) (*gantry.Job, error) {
	j, err := s.jobStore.Update(ctx, id, fn)
	s.changed.notify()
	return j, err
}

func (s *notifyingStore) CreateSweep(ctx context.Context, sw *gantry.Sweep, jobs []*gantry.Job) error {
	err := s.jobStore.CreateSweep(ctx, sw, jobs)
	s.changed.notify()
	return err
}

func (s *notifyingStore) UpdateSweep(ctx context.Context, id string, fn func(*gantry.Sweep) error) (*gantry.Sweep, error) {
	sw, err := s.jobStore.UpdateSweep(ctx, id, fn)
	s.changed.notify()
	return sw, err
}

// keepAlive is how long an idle event stream waits before send(nil), so
// that the transport can prove the connection alive.
var keepAlive = 15 * time.Second

// Events sends the events numbered after after to send, oldest first, then,
// with follow, goes on sending new ones as they happen until ctx ends. With
// job set, only that job's events are sent, and the stream ends after the
// job's terminal state. When the stream is idle, send(nil) is called now and
// then. It returns send's error, or ctx's.
func (d *Daemon) Events(ctx context.Context, after uint64, job string, follow bool, send func(*gantry.Event) error) error {
	if job != "" {
		if _, err := d.store.Get(ctx, job); err != nil {
			return err
		}
	}
	const page = 1000
	for {
		changed := d.changed.wait() // before reading: no change falls between
		// Every event up to last is in the read that follows: a job's
		// follower reads on from there, not again over other jobs' events.
		// (One of every job reads on from the last event it sent.)
		var last uint64
		if job != "" {
			var err error
			if last, err = d.store.LastEvent(ctx); err != nil {
				return err
			}
		}
		evs, err := d.store.Events(ctx, after, job, page)
		if err != nil {
			return err
		}
		for i := range evs {
			if err := send(&evs[i]); err != nil {
				return err
			}
			after = evs[i].Seq
			if job != "" && evs[i].Type == gantry.EventState && evs[i].State.Terminal() {
				return nil
			}
		}
		if len(evs) == page {
			continue
		}
		after = max(after, last)
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-time.After(keepAlive):
			if err := send(nil); err != nil {
				return err
			}
		}
	}
}
