// Package store keeps gantry's job records in a bbolt file.
//
// The file holds one bucket per record kind: "jobs" maps a job ID to the
// job's JSON, "active" holds the IDs of the jobs that have not reached a
// terminal state (so that a restarting daemon finds them without reading
// every record), "outbox" holds the webhook messages of ended jobs until they
// are delivered (outbox.go), and "meta" holds the schema version and the instance ID. Job IDs sort in
// creation order, so key order is submission order.
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/gantry-ml/gantry"
)

// SchemaVersion is the version of the file layout this package reads and
// writes. A file written with a higher version is refused rather than
// misread.
const SchemaVersion = 1

// List page sizes.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// lockTimeout bounds how long Open waits for the file lock, so that a second
// gantryd on the same file fails quickly instead of hanging.
const lockTimeout = time.Second

var (
	bucketJobs   = []byte("jobs")
	bucketActive = []byte("active")
	bucketMeta   = []byte("meta")
	bucketEvents = []byte("events")
	keyInstance  = []byte("instance")
	keySchema    = []byte("schema")
)

// Store is gantry's record of jobs. Its methods are safe for concurrent use.
type Store struct {
	db *bolt.DB

	// Creates go through one committer, which puts every create waiting
	// when it starts a transaction into that transaction: concurrent
	// submissions share a commit and its fsync, and a lone one waits for
	// nothing.
	creates chan *create
	closing chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// Open opens the data file at path, creating it (mode 0600) and its buckets
// when it does not exist. It returns an error of kind ErrUnavailable when
// another process holds the file, and of kind ErrInvalid when the file is
// not a gantry data file or was written by a newer gantryd (its schema
// version is above SchemaVersion).
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store: %w", gantry.Errorf(gantry.ErrUnavailable,
			"data file %s is in use by another gantryd", path))
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("open store: %w", gantry.Errorf(gantry.ErrInvalid,
			"data file %s is not a gantry data file or is damaged: %v", path, err))
	case err != nil:
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return initFile(tx, path) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return openedStore(db), nil
}

// initFile checks the schema version before creating anything, so that a
// file from a newer gantryd is left exactly as it was.
func initFile(tx *bolt.Tx, path string) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if v := meta.Get(keySchema); v != nil {
		var have int
		if err := json.Unmarshal(v, &have); err != nil {
			return gantry.Errorf(gantry.ErrInvalid, "data file %s: unreadable schema version %q", path, v)
		}
		if have > SchemaVersion {
			return gantry.Errorf(gantry.ErrInvalid,
				"data file %s has schema version %d, but this gantryd knows only up to version %d: use a newer gantryd",
				path, have, SchemaVersion)
		}
		if have < 1 {
			return gantry.Errorf(gantry.ErrInvalid, "data file %s: bad schema version %d", path, have)
		}
		// Migrations from older versions go here once there is more than one.
	} else {
		v, err := json.Marshal(SchemaVersion)
		if err != nil {
			return err
		}
		if err := meta.Put(keySchema, v); err != nil {
			return err
		}
	}
	for _, name := range [][]byte{bucketJobs, bucketActive, bucketEvents, bucketSweeps, bucketOutbox} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	if meta.Get(keyInstance) == nil {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		if err := meta.Put(keyInstance, []byte(hex.EncodeToString(b[:]))); err != nil {
			return err
		}
	}
	return nil
}

// Instance returns the data file's instance ID: random, made when the file
// was, and kept for its life. gantryd labels what it creates in the engine
// with it, so that two daemons sharing an engine never take each other's
// containers for orphans. It returns no error kind.
func (s *Store) Instance() (string, error) {
	var id string
	err := s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyInstance))
		return nil
	})
	if err != nil || id == "" {
		return "", fmt.Errorf("store: no instance ID: %v", err)
	}
	return id, nil
}

// Close closes the data file, releasing its lock. It returns no error kind.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.closing) })
	<-s.stopped
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// MaxRecordBytes bounds one job's record, so that no input grows it without
// end (and ls, which reads records, stays fast).
const MaxRecordBytes = 1 << 20

// fits refuses a record over MaxRecordBytes with ErrTooLarge.
func fits(v []byte) error {
	if len(v) > MaxRecordBytes {
		return gantry.Errorf(gantry.ErrTooLarge, "the job's record would take %d bytes, over the %d a record may hold", len(v), MaxRecordBytes)
	}
	return nil
}

// Create records a new job. It returns an error of kind ErrInvalid when j
// has no valid ID or state, ErrTooLarge for a record over MaxRecordBytes,
// and ErrConflict when a job with its ID already exists.
func (s *Store) Create(ctx context.Context, j *gantry.Job) error {
	if j == nil {
		return fmt.Errorf("create job: %w", gantry.Errorf(gantry.ErrInvalid, "no job"))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create job %s: %w", j.ID, err)
	}
	if !gantry.ValidID(j.ID) {
		return fmt.Errorf("create job %q: %w", j.ID, gantry.Errorf(gantry.ErrInvalid, "not a job ID"))
	}
	if !j.State.Valid() {
		return fmt.Errorf("create job %s: %w", j.ID, gantry.Errorf(gantry.ErrInvalid, "unknown state %q", j.State))
	}
	v, err := json.Marshal(j)
	if err == nil {
		err = fits(v)
	}
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.ID, err)
	}
	key := []byte(j.ID)
	// Creates that arrive together share one transaction and one fsync
	// (fn may run twice: each run starts from a clean transaction, so the
	// event is appended once).
	err = s.group(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		if jobs.Get(key) != nil {
			return gantry.Errorf(gantry.ErrConflict, "a job with this ID already exists")
		}
		if err := jobs.Put(key, v); err != nil {
			return err
		}
		if err := appendEvents(tx, gantry.Changes(nil, j, time.Now())); err != nil {
			return err
		}
		return index(tx, key, j.State)
	})
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.ID, err)
	}
	return nil
}

// Get returns the job with the given ID. It returns an error of kind
// ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, id string) (*gantry.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	if !gantry.ValidID(id) {
		return nil, fmt.Errorf("get job %q: %w", id, errNoJob)
	}
	var j *gantry.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJobs).Get([]byte(id))
		if v == nil {
			return errNoJob
		}
		var err error
		j, err = decode(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// Update reads the job with the given ID, applies fn to it and writes it
// back, all in one transaction, so that no other change falls in between.
// fn must do only local work (it runs with the file's write lock held).
// When fn returns an error nothing is written and that error is returned
// unchanged. Otherwise Update returns a copy of the job as stored. It
// returns an error of kind ErrNotFound when there is no such job, and of
// kind ErrInvalid when fn changed the job's ID or gave it an unknown state,
// and ErrTooLarge when the record would grow over MaxRecordBytes.
func (s *Store) Update(ctx context.Context, id string, fn func(*gantry.Job) error) (*gantry.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("update job %s: %w", id, err)
	}
	if !gantry.ValidID(id) {
		return nil, fmt.Errorf("update job %q: %w", id, errNoJob)
	}
	key := []byte(id)
	var (
		fnErr error
		saved []byte
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		v := jobs.Get(key)
		if v == nil {
			return errNoJob
		}
		j, err := decode(v)
		if err != nil {
			return err
		}
		old, err := decode(v)
		if err != nil {
			return err
		}
		if fnErr = fn(j); fnErr != nil {
			return fnErr
		}
		if j.ID != id {
			return gantry.Errorf(gantry.ErrInvalid, "the update changed the job's ID to %q", j.ID)
		}
		if !j.State.Valid() {
			return gantry.Errorf(gantry.ErrInvalid, "the update set unknown state %q", j.State)
		}
		if saved, err = json.Marshal(j); err != nil {
			return err
		}
		if err := fits(saved); err != nil {
			return err
		}
		if err := jobs.Put(key, saved); err != nil {
			return err
		}
		now := time.Now()
		if err := appendEvents(tx, gantry.Changes(old, j, now)); err != nil {
			return err
		}
		if err := enqueueWebhooks(tx, old, j, now); err != nil {
			return err
		}
		return index(tx, key, j.State)
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, fmt.Errorf("update job %s: %w", id, err)
	}
	// Decode what was written rather than return the job fn saw, which fn
	// may still hold.
	j, err := decode(saved)
	if err != nil {
		return nil, fmt.Errorf("update job %s: %w", id, err)
	}
	return j, nil
}

// List returns a page of jobs, newest first, and the cursor to pass as
// gantry.JobFilter.Before for the next page, or "" when there are no more. It
// returns an error of kind ErrInvalid when Before is not a job ID or States
// holds an unknown state.
func (s *Store) List(ctx context.Context, o gantry.JobFilter) (jobs []*gantry.Job, next string, err error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	limit := o.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	if o.Before != "" && !gantry.ValidID(o.Before) {
		return nil, "", fmt.Errorf("list jobs: %w", gantry.Errorf(gantry.ErrInvalid, "cursor %q is not a job ID", o.Before))
	}
	want := make(map[gantry.State]bool, len(o.States))
	onlyActive := len(o.States) > 0
	for _, st := range o.States {
		if !st.Valid() {
			return nil, "", fmt.Errorf("list jobs: %w", gantry.Errorf(gantry.ErrInvalid, "unknown state %q", st))
		}
		want[st] = true
		onlyActive = onlyActive && !st.Terminal()
	}

	err = s.db.View(func(tx *bolt.Tx) error {
		all := tx.Bucket(bucketJobs)
		// When only non-terminal states are wanted, walk the (small) active
		// index instead of every record.
		walk := all
		if onlyActive {
			walk = tx.Bucket(bucketActive)
		}
		c := walk.Cursor()
		var k []byte
		if o.Before == "" {
			k, _ = c.Last()
		} else {
			before := []byte(o.Before)
			k, _ = c.Seek(before)
			if k == nil {
				k, _ = c.Last()
			} else if bytes.Compare(k, before) >= 0 {
				k, _ = c.Prev()
			}
		}
		for ; k != nil; k, _ = c.Prev() {
			v := all.Get(k)
			if v == nil {
				return fmt.Errorf("active job %s has no record", k)
			}
			if len(want) > 0 {
				st, err := state(v)
				if err != nil {
					return fmt.Errorf("job %s: %w", k, err)
				}
				if !want[st] {
					continue
				}
			}
			if len(jobs) == limit {
				// One more matching job exists: the page is not the last.
				next = jobs[len(jobs)-1].ID
				return nil
			}
			j, err := decode(v)
			if err != nil {
				return fmt.Errorf("job %s: %w", k, err)
			}
			jobs = append(jobs, j)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	return jobs, next, nil
}

// Unfinished returns every job not yet in a terminal state, in submission
// order: the jobs a restarting daemon must finish or clean up. It returns
// no error kind.
func (s *Store) Unfinished(ctx context.Context) ([]*gantry.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	var jobs []*gantry.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		all := tx.Bucket(bucketJobs)
		c := tx.Bucket(bucketActive).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			v := all.Get(k)
			if v == nil {
				return fmt.Errorf("active job %s has no record", k)
			}
			j, err := decode(v)
			if err != nil {
				return fmt.Errorf("job %s: %w", k, err)
			}
			jobs = append(jobs, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unfinished jobs: %w", err)
	}
	return jobs, nil
}

var errNoJob = gantry.Errorf(gantry.ErrNotFound, "no such job")

// index keeps the active bucket in step with a job's state; it must run in
// the transaction that writes the job.
func index(tx *bolt.Tx, key []byte, st gantry.State) error {
	active := tx.Bucket(bucketActive)
	if st.Terminal() {
		return active.Delete(key)
	}
	return active.Put(key, []byte{})
}

// decode copies a job out of v, which may be memory owned by a transaction.
func decode(v []byte) (*gantry.Job, error) {
	var j gantry.Job
	if err := json.Unmarshal(v, &j); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	return &j, nil
}

// state reads only a record's state, for filtering without decoding the rest.
func state(v []byte) (gantry.State, error) {
	var h struct {
		State gantry.State `json:"state"`
	}
	if err := json.Unmarshal(v, &h); err != nil {
		return "", fmt.Errorf("decode job: %w", err)
	}
	return h.State, nil
}

// Counts returns how many jobs are in each state. It returns no error kind.
func (s *Store) Counts(ctx context.Context) (map[gantry.State]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	counts := map[gantry.State]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(_, v []byte) error {
			st, err := state(v)
			if err != nil {
				return err
			}
			counts[st]++
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return counts, nil
}
