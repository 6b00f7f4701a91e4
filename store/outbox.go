package store

// The webhook outbox: the messages a job's end sends, written in the
// transaction that records the end, so that none is lost to a crash
// between the two; a message leaves it once delivered or given up.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gantry-ml/gantry"
)

// bucketOutbox maps a message ID (gantry.WebhookID: the job's ID, then the
// message's number, so keys sort by job) to its gantry.WebhookMessage.
var bucketOutbox = []byte("outbox")

// enqueueWebhooks writes j's messages to the outbox when the change from
// old to j ends the job; it must run in the transaction that writes j.
func enqueueWebhooks(tx *bolt.Tx, old, j *gantry.Job, now time.Time) error {
	if len(j.Webhooks) == 0 || !j.State.Terminal() || old != nil && old.State.Terminal() {
		return nil
	}
	body, err := json.Marshal(gantry.EndedEvent(j, now))
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketOutbox)
	for i, w := range j.Webhooks {
		if w.Delivered != nil || w.GaveUp != "" {
			continue
		}
		m := gantry.WebhookMessage{ID: w.ID, Job: j.ID, Index: i, URL: w.URL, Operator: w.Operator,
			Body: body, Created: now, Next: now}
		v, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(m.ID), v); err != nil {
			return err
		}
	}
	return nil
}

// PendingWebhooks returns the messages in the outbox, oldest job first. It
// returns no error kind.
func (s *Store) PendingWebhooks(ctx context.Context) ([]gantry.WebhookMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pending webhooks: %w", err)
	}
	var ms []gantry.WebhookMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			var m gantry.WebhookMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("message %s: %w", k, err)
			}
			ms = append(ms, m)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pending webhooks: %w", err)
	}
	return ms, nil
}

// WebhookAttempted records attempt a of message m in m's job, in one
// transaction with the outbox: with done, m leaves the outbox and the job's
// webhook is marked delivered (gaveUp empty) or given up (gaveUp says why);
// else m is kept with its Attempts and Next as given. It returns ErrNotFound
// when m is no longer in the outbox, or its job is gone (m is then dropped).
func (s *Store) WebhookAttempted(ctx context.Context, m gantry.WebhookMessage, a gantry.WebhookAttempt, done bool, gaveUp string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record webhook %s: %w", m.ID, err)
	}
	var gone error
	err := s.db.Update(func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOutbox)
		key := []byte(m.ID)
		if out.Get(key) == nil {
			return gantry.Errorf(gantry.ErrNotFound, "no such message in the outbox")
		}
		if err := recordAttempt(tx, m, a, done, gaveUp); errors.Is(err, gantry.ErrNotFound) {
			gone = err // its job was removed: nothing to tell of any more
			return out.Delete(key)
		} else if err != nil {
			return err
		}
		if done {
			return out.Delete(key)
		}
		v, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return out.Put(key, v)
	})
	if err == nil {
		err = gone
	}
	if err != nil {
		return fmt.Errorf("record webhook %s: %w", m.ID, err)
	}
	return nil
}

// recordAttempt adds a to the job's record of message m.
func recordAttempt(tx *bolt.Tx, m gantry.WebhookMessage, a gantry.WebhookAttempt, done bool, gaveUp string) error {
	jobs := tx.Bucket(bucketJobs)
	v := jobs.Get([]byte(m.Job))
	if v == nil {
		return gantry.Errorf(gantry.ErrNotFound, "job %s is gone", m.Job)
	}
	j, err := decode(v)
	if err != nil {
		return err
	}
	if m.Index < 0 || m.Index >= len(j.Webhooks) || j.Webhooks[m.Index].ID != m.ID {
		return gantry.Errorf(gantry.ErrNotFound, "job %s has no webhook %s", m.Job, m.ID)
	}
	w := &j.Webhooks[m.Index]
	w.Attempts = append(w.Attempts, a)
	if done && gaveUp == "" {
		t := a.Time.Add(time.Duration(a.Duration))
		w.Delivered = &t
	} else if done {
		w.GaveUp = gaveUp
	}
	saved, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := fits(saved); err != nil {
		return err
	}
	return jobs.Put([]byte(m.Job), saved)
}
