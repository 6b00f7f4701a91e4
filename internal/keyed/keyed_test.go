package keyed

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMutexSerializesOneKeyOnly(t *testing.T) {
	var k Mutex[string]
	var inA atomic.Int32
	var maxA atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			unlock := k.Lock("a")
			if n := inA.Add(1); n > maxA.Load() {
				maxA.Store(n)
			}
			time.Sleep(time.Millisecond)
			inA.Add(-1)
			unlock()
		})
	}
	// Another key is not held up by "a".
	unlockA := k.Lock("a")
	done := make(chan struct{})
	go func() {
		k.Lock("b")()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("key b waited for key a")
	}
	unlockA()
	wg.Wait()
	if maxA.Load() != 1 {
		t.Errorf("%d holders of key a at once, want 1", maxA.Load())
	}
	if n := k.Len(); n != 0 {
		t.Errorf("%d keys left after every unlock, want 0", n)
	}
}

func TestLockContextGivesUp(t *testing.T) {
	var k Mutex[string]
	unlock := k.Lock("a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.LockContext(ctx, "a"); err != context.DeadlineExceeded {
		t.Fatalf("LockContext on a held key: %v, want the deadline", err)
	}
	unlock()
	if n := k.Len(); n != 0 {
		t.Errorf("%d keys left after the waiter gave up and the holder unlocked, want 0", n)
	}
	unlock2, err := k.LockContext(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}
