package store

// Removing jobs: a prune removes finished jobs' records with their events,
// and leaves one "removed" event each, so that a follower of the event
// stream learns the job is gone.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gantry-ml/gantry"
)

// Delete removes the records of the jobs ids, in one transaction, with
// every event of theirs, and the record of each finished sweep whose last
// point it removed, with the sweep's events; it appends one
// gantry.EventRemoved event for each job and sweep it removed, numbered after every event before, so that a client
// following the stream sees the removal and a client resuming from a
// number it saw misses nothing that is still recorded. An ID with no
// record is skipped (a prune that stopped half way may be run again). It
// returns the IDs it removed, and an error of kind ErrConflict, removing
// nothing, when one of the jobs has not finished.
func (s *Store) Delete(ctx context.Context, ids []string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("delete jobs: %w", err)
	}
	var removed []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed = removed[:0]
		jobs := tx.Bucket(bucketJobs)
		gone := map[string]bool{}
		for _, id := range ids {
			v := jobs.Get([]byte(id))
			if v == nil || gone[id] {
				continue
			}
			st, err := state(v)
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			if !st.Terminal() {
				return gantry.Errorf(gantry.ErrConflict, "job %s is %s: only a finished job is removed", id, st)
			}
			gone[id] = true
			removed = append(removed, id)
		}
		for _, id := range removed {
			if err := jobs.Delete([]byte(id)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketActive).Delete([]byte(id)); err != nil {
				return err
			}
		}
		sweeps, err := deleteSweeps(tx)
		if err != nil {
			return err
		}
		if err := deleteEvents(tx, gone, sweeps); err != nil {
			return err
		}
		now := time.Now().UTC()
		evs := make([]gantry.Event, 0, len(removed))
		for _, id := range removed {
			evs = append(evs, gantry.Event{Time: now, Job: id, Type: gantry.EventRemoved})
		}
		for id := range sweeps {
			evs = append(evs, gantry.Event{Time: now, Sweep: id, Type: gantry.EventRemoved})
		}
		return appendEvents(tx, evs)
	})
	if err != nil {
		return nil, fmt.Errorf("delete jobs: %w", err)
	}
	return removed, nil
}

// deleteSweeps removes the finished sweeps none of whose points has a
// record left, and returns their IDs.
func deleteSweeps(tx *bolt.Tx) (map[string]bool, error) {
	gone := map[string]bool{}
	jobs, b := tx.Bucket(bucketJobs), tx.Bucket(bucketSweeps)
	err := b.ForEach(func(k, v []byte) error {
		sw, err := decodeSweep(v)
		if err != nil {
			return err
		}
		if !sw.State.Terminal() {
			return nil
		}
		for _, id := range sw.Jobs {
			if jobs.Get([]byte(id)) != nil {
				return nil
			}
		}
		gone[sw.ID] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	for id := range gone {
		if err := b.Delete([]byte(id)); err != nil {
			return nil, err
		}
	}
	return gone, nil
}

// deleteEvents removes the events of the jobs in gone and of the sweeps in
// sweeps. The bucket's sequence stays, so numbers are never given twice.
func deleteEvents(tx *bolt.Tx, gone, sweeps map[string]bool) error {
	if len(gone) == 0 && len(sweeps) == 0 {
		return nil
	}
	var keys [][]byte
	c := tx.Bucket(bucketEvents).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var e struct {
			Job   string `json:"job"`
			Sweep string `json:"sweep"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("event %x: %w", k, err)
		}
		if gone[e.Job] || (e.Job == "" && sweeps[e.Sweep]) {
			keys = append(keys, append([]byte(nil), k...))
		}
	}
	b := tx.Bucket(bucketEvents)
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
