package store

// The event log: each change of a job, numbered, appended in the same
// transaction as the change.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/gantry-ml/gantry"
)

// appendEvents numbers evs and records them, in the transaction that made
// the change they tell of.
func appendEvents(tx *bolt.Tx, evs []gantry.Event) error {
	b := tx.Bucket(bucketEvents)
	for _, e := range evs {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
			return err
		}
	}
	return nil
}

// LastEvent returns the number of the newest event (0 when there is none).
// Events numbered after it are the changes it does not cover. It returns no
// error kind.
func (s *Store) LastEvent(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("last event: %w", err)
	}
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketEvents).Sequence()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("last event: %w", err)
	}
	return seq, nil
}

// Events returns up to limit events numbered after after, oldest first;
// with job set, only that job's. Every change to a job's state, accuracy or
// pushes is an event, recorded with the change itself. It returns no error
// kind.
func (s *Store) Events(ctx context.Context, after uint64, job string, limit int) ([]gantry.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if limit <= 0 {
		limit = 1000
	}
	var evs []gantry.Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && len(evs) < limit; k, v = c.Next() {
			if job != "" && !bytes.Contains(v, []byte(job)) {
				continue // not job's: no need to decode it
			}
			var e gantry.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event %x: %w", k, err)
			}
			if job == "" || e.Job == job {
				evs = append(evs, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return evs, nil
}
