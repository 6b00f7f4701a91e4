// Package keyed serializes work per key: promotions of one tag, the
// compression of one layer.
package keyed

import (
	"context"
	"sync"
)

// Mutex is a set of mutexes, one per key, each there only while someone
// holds or waits for it. The zero value is ready to use.
type Mutex[K comparable] struct {
	mu sync.Mutex
	m  map[K]*entry
}

type entry struct {
	held  chan struct{} // holds a value while the key is locked
	users int
}

// Lock locks key's mutex and returns the function that unlocks it.
func (k *Mutex[K]) Lock(key K) (unlock func()) {
	unlock, _ = k.LockContext(context.Background(), key)
	return unlock
}

// LockContext is Lock, giving up with ctx's error when ctx ends first.
func (k *Mutex[K]) LockContext(ctx context.Context, key K) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[K]*entry{}
	}
	e, ok := k.m[key]
	if !ok {
		e = &entry{held: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.users++
	k.mu.Unlock()
	leave := func() {
		k.mu.Lock()
		if e.users--; e.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case e.held <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	return func() {
		<-e.held
		leave()
	}, nil
}

// Len returns how many keys are held or waited for.
func (k *Mutex[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
