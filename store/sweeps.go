package store

// Sweeps: the "sweeps" bucket maps a sweep ID to its JSON, beside the jobs
// that are its points (each names its sweep).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gantry-ml/gantry"
)

var bucketSweeps = []byte("sweeps")

var errNoSweep = gantry.Errorf(gantry.ErrNotFound, "no such sweep")

// CreateSweep records a new sweep and its points' jobs in one transaction,
// so that a crash leaves all of it or none. It returns ErrInvalid for a bad
// ID or state, ErrTooLarge for a record over MaxRecordBytes, and
// ErrConflict when the sweep or one of the jobs exists already.
func (s *Store) CreateSweep(ctx context.Context, sw *gantry.Sweep, jobs []*gantry.Job) error {
	if sw == nil || !gantry.ValidID(sw.ID) || !sw.State.Valid() {
		return fmt.Errorf("create sweep: %w", gantry.Errorf(gantry.ErrInvalid, "not a valid sweep"))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create sweep %s: %w", sw.ID, err)
	}
	v, err := json.Marshal(sw)
	if err == nil {
		err = fits(v)
	}
	vals := make([][]byte, len(jobs))
	for i, j := range jobs {
		if err != nil {
			break
		}
		if !gantry.ValidID(j.ID) || !j.State.Valid() {
			err = gantry.Errorf(gantry.ErrInvalid, "job %q: not a valid job", j.ID)
			break
		}
		if vals[i], err = json.Marshal(j); err == nil {
			err = fits(vals[i])
		}
	}
	if err != nil {
		return fmt.Errorf("create sweep %s: %w", sw.ID, err)
	}
	now := time.Now()
	err = s.group(func(tx *bolt.Tx) error {
		sweeps, all := tx.Bucket(bucketSweeps), tx.Bucket(bucketJobs)
		if sweeps.Get([]byte(sw.ID)) != nil {
			return gantry.Errorf(gantry.ErrConflict, "a sweep with this ID already exists")
		}
		if err := sweeps.Put([]byte(sw.ID), v); err != nil {
			return err
		}
		if err := appendEvents(tx, sweepEvents(nil, sw, now)); err != nil {
			return err
		}
		for i, j := range jobs {
			key := []byte(j.ID)
			if all.Get(key) != nil {
				return gantry.Errorf(gantry.ErrConflict, "a job with ID %s already exists", j.ID)
			}
			if err := all.Put(key, vals[i]); err != nil {
				return err
			}
			if err := appendEvents(tx, gantry.Changes(nil, j, now)); err != nil {
				return err
			}
			if err := index(tx, key, j.State); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create sweep %s: %w", sw.ID, err)
	}
	return nil
}

// GetSweep returns the sweep with the given ID. It returns ErrNotFound.
func (s *Store) GetSweep(ctx context.Context, id string) (*gantry.Sweep, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get sweep %s: %w", id, err)
	}
	var sw *gantry.Sweep
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSweeps).Get([]byte(id))
		if v == nil {
			return errNoSweep
		}
		var err error
		sw, err = decodeSweep(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get sweep %s: %w", id, err)
	}
	return sw, nil
}

// UpdateSweep reads sweep id, applies fn and writes it back in one
// transaction (fn does local work only; its error is returned unchanged and
// nothing is written). It returns the sweep as stored, ErrNotFound, and
// ErrInvalid when fn changed the ID or set an unknown state.
func (s *Store) UpdateSweep(ctx context.Context, id string, fn func(*gantry.Sweep) error) (*gantry.Sweep, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("update sweep %s: %w", id, err)
	}
	var (
		fnErr error
		saved []byte
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSweeps)
		v := b.Get([]byte(id))
		if v == nil {
			return errNoSweep
		}
		sw, err := decodeSweep(v)
		if err != nil {
			return err
		}
		old := *sw
		if fnErr = fn(sw); fnErr != nil {
			return fnErr
		}
		if sw.ID != id || !sw.State.Valid() {
			return gantry.Errorf(gantry.ErrInvalid, "the update changed the sweep's ID to %q or set state %q", sw.ID, sw.State)
		}
		if saved, err = json.Marshal(sw); err != nil {
			return err
		}
		if err := fits(saved); err != nil {
			return err
		}
		if err := appendEvents(tx, sweepEvents(&old, sw, time.Now())); err != nil {
			return err
		}
		return b.Put([]byte(id), saved)
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, fmt.Errorf("update sweep %s: %w", id, err)
	}
	return decodeSweep(saved)
}

// ListSweeps returns up to limit sweeps (all when limit <= 0), newest first;
// with unfinished, only those not in a terminal state. It returns no error
// kind.
func (s *Store) ListSweeps(ctx context.Context, limit int, unfinished bool) ([]*gantry.Sweep, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list sweeps: %w", err)
	}
	var out []*gantry.Sweep
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSweeps).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			sw, err := decodeSweep(v)
			if err != nil {
				return fmt.Errorf("sweep %s: %w", k, err)
			}
			if !unfinished || !sw.State.Terminal() {
				out = append(out, sw)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sweeps: %w", err)
	}
	return out, nil
}

// sweepEvents is the event a change of a sweep from old (nil: new) to cur
// makes: one when its state changed or its winner was chosen.
func sweepEvents(old, cur *gantry.Sweep, now time.Time) []gantry.Event {
	if old != nil && old.State == cur.State && old.Winner == cur.Winner {
		return nil
	}
	return []gantry.Event{{Time: now.UTC(), Type: gantry.EventSweep, Sweep: cur.ID, State: cur.State, Error: cur.Error}}
}

// decodeSweep copies a sweep out of v, which a transaction may own.
func decodeSweep(v []byte) (*gantry.Sweep, error) {
	var sw gantry.Sweep
	if err := json.Unmarshal(bytes.Clone(v), &sw); err != nil {
		return nil, fmt.Errorf("decode sweep: %w", err)
	}
	return &sw, nil
}
