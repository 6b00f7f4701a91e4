package store

// Group commit: creates that arrive together share one transaction and
// one fsync.

import (
	bolt "go.etcd.io/bbolt"

	"github.com/gantry-ml/gantry"
)

type create struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// maxGroup bounds the creates committed in one transaction.
const maxGroup = 512

func openedStore(db *bolt.DB) *Store {
	s := &Store{db: db, creates: make(chan *create), closing: make(chan struct{}), stopped: make(chan struct{})}
	go s.commitCreates()
	return s
}

func (s *Store) commitCreates() {
	defer close(s.stopped)
	for {
		var first *create
		select {
		case first = <-s.creates:
		case <-s.closing:
			return
		}
		group := []*create{first}
	more:
		for len(group) < maxGroup {
			select {
			case c := <-s.creates:
				group = append(group, c)
			default:
				break more
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, c := range group {
				if err := c.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || len(group) == 1 {
			for _, c := range group {
				c.done <- err
			}
			continue
		}
		// One of them failed the transaction: each alone, so that only
		// that one fails.
		for _, c := range group {
			c.done <- s.db.Update(c.fn)
		}
	}
}

// group runs fn in a write transaction shared with the other creates that
// are waiting; fn may not see its writes kept if another fails, in which
// case it runs again alone.
func (s *Store) group(fn func(*bolt.Tx) error) error {
	c := &create{fn: fn, done: make(chan error, 1)}
	select {
	case s.creates <- c:
	case <-s.closing:
		return gantry.Errorf(gantry.ErrUnavailable, "the store is closed")
	}
	return <-c.done
}
