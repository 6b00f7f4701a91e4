package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/gantry-ml/gantry"
)

// acquireLock takes the machine-wide lab lock, waiting while another
// process holds it. The kernel drops a dead process's lock, so whoever
// holds it knows every glab* leftover is stale.
func acquireLock(ctx context.Context, logf func(string, ...any)) (*os.File, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(cacheDir, "swarm.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		return f, nil
	}
	logf("lab: waiting for another swarm lab (another process) to close")
	got := make(chan error, 1)
	go func() { got <- syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lab lock: %w", err)
		}
		return f, nil
	case <-ctx.Done():
		// Closing the file releases the lock should the goroutine get it.
		go func() { <-got; f.Close() }()
		return nil, fmt.Errorf("wait for another lab to close: %w: %w", gantry.ErrUnavailable, ctx.Err())
	}
}

// cleanStale removes what a lab whose process died left behind: processes
// in its namespaces, the namespaces and links, mounts and run directories.
// The caller holds the lock.
func cleanStale(ctx context.Context) error {
	errs := []error{cleanNetwork(ctx, "")}
	errs = append(errs, unmountUnder(runRoot+"/", nodeRootPrefix))
	errs = append(errs, os.RemoveAll(runRoot))
	return errors.Join(errs...)
}

// Close stops every dockerd and the registry, removes the namespaces, links,
// mounts and the run directory, and releases the lab lock. Only the cache
// (registry storage, node data roots) stays. It is safe to call twice and
// after a partial start.
func (s *Swarm) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Swarm) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var errs []error
	// Containers first: stopping an engine with running containers waits
	// for each one's stop timeout.
	var wg sync.WaitGroup
	for _, c := range s.clients {
		wg.Go(func() { _ = removeContainers(ctx, c) })
	}
	wg.Wait()
	for _, c := range s.clients {
		c.Close()
	}
	stopErrs := make([]error, len(s.dockerds))
	for i, p := range s.dockerds {
		wg.Go(func() { stopErrs[i] = p.stop(60 * time.Second) })
	}
	wg.Wait()
	errs = append(errs, stopErrs...)
	if s.registry != nil {
		errs = append(errs, s.registry.stop(10*time.Second))
	}
	if s.names.run != "" {
		errs = append(errs, cleanNetwork(ctx, s.names.run))
		errs = append(errs, unmountUnder(s.names.runDir()+"/", nodeRootPrefix))
		errs = append(errs, os.RemoveAll(s.names.runDir()))
		// The run root goes too when no other run is in it.
		_ = os.Remove(runRoot)
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close lab: %w", err)
	}
	s.logf("lab: closed")
	return nil
}
