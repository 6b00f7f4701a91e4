package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
	"github.com/gantry-ml/gantry/store"
)

// Case 5: the API alone. gantry has no docker counterpart here; the figures
// are absolute, against the targets.

// api runs the API measurements: gantryd's memory when idle, admission
// latency under 50 concurrent clients (beside the disk's fsync latency),
// the time from a change to an event stream's client, memory while 4 jobs
// train, and list pages over a data file of 100,000 records.
func (b *bench) api(ctx context.Context) error {
	if err := b.rssIdle(ctx); err != nil {
		return fmt.Errorf("idle memory: %w", err)
	}
	if err := b.admission(ctx); err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	if err := b.sseLatency(ctx); err != nil {
		return fmt.Errorf("event latency: %w", err)
	}
	if err := b.rssBusy(ctx); err != nil {
		return fmt.Errorf("memory with 4 jobs: %w", err)
	}
	if err := b.list(ctx); err != nil {
		return fmt.Errorf("ls: %w", err)
	}
	return nil
}

// tarContext is a build context holding only a Dockerfile.
func tarContext(dockerfile string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	tw.Write([]byte(dockerfile))
	tw.Close()
	return buf.Bytes()
}

func (b *bench) trueContext() []byte {
	return tarContext(fmt.Sprintf("FROM %s\nCMD [\"true\"]\n", b.cfg.base))
}

// sleepContext is a trainer that runs until it is stopped. (As PID 1 it
// ignores SIGTERM: the daemons that run it stop it after --stop-timeout 1s.)
func (b *bench) sleepContext() []byte {
	return tarContext(fmt.Sprintf("FROM %s\nCMD [\"sleep\", \"infinity\"]\n", b.cfg.base))
}

func submit(ctx context.Context, cl *api.Client, tarball []byte) (*gantry.Job, error) {
	return cl.Submit(ctx, gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile"}}, nil, bytes.NewReader(tarball))
}

const mib = 1 << 20

// rssIdle starts a fresh gantryd per run, lets it settle, and reads its
// resident memory.
func (b *bench) rssIdle(ctx context.Context) error {
	for i := 1; i <= b.cfg.runs; i++ {
		d, err := b.startDaemon(ctx, fmt.Sprintf("idle-%d", i), "")
		if err != nil {
			return err
		}
		time.Sleep(3 * time.Second)
		st, err := d.stat()
		d.stop()
		if err != nil {
			return err
		}
		b.res.add("api/rss-idle", gantrySide, float64(st.rssBytes)/mib)
		log.Printf("idle %d/%d: gantryd RSS %.1f MiB", i, b.cfg.runs, float64(st.rssBytes)/mib)
	}
	return nil
}

// admission submits bursts of jobs from concurrent clients to a gantryd
// whose one job slot a sleeping trainer holds, so that what is measured is
// admission (the context unpacked, the record committed), not the jobs.
// Everything is cancelled afterwards.
func (b *bench) admission(ctx context.Context) error {
	// The burst is all admitted: the queue's bounds (--max-queue, default
	// 100) are lifted, so that admission itself is what is measured.
	d, err := b.startDaemon(ctx, "admission", "", "--max-jobs", "1", "--stop-timeout", "1s",
		"--max-queue", "0", "--max-queued-bytes", "0")
	if err != nil {
		return err
	}
	defer d.stop()
	blocker, err := submit(ctx, d.client, b.sleepContext())
	if err != nil {
		return err
	}
	if _, err := waitState(ctx, d.client, blocker.ID, 5*time.Minute, func(s gantry.State) bool { return s == gantry.StateRunning }); err != nil {
		return fmt.Errorf("the blocking job: %w", err)
	}
	clients := make([]*api.Client, b.cfg.clients)
	for i := range clients {
		if clients[i], err = api.NewClient("unix://" + d.socket); err != nil {
			return err
		}
	}
	tarball := b.trueContext()
	n := b.cfg.submissions
	// Burst 0 is the first a fresh gantryd takes (its data file new, its
	// heap and connections cold): it is reported on a row of its own, and
	// the runs that follow are the steady state the target is about.
	for run := 0; run <= b.cfg.runs; run++ {
		if run > 0 {
			if err := b.diskFsync(d.dataDir, run); err != nil {
				return err
			}
		}
		lat := make([]time.Duration, n)
		ids := make([]string, n)
		var (
			next     atomic.Int64
			wg       sync.WaitGroup
			errOnce  sync.Once
			firstErr error
		)
		start := time.Now()
		for _, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k := int(next.Add(1) - 1)
					if k >= n {
						return
					}
					t0 := time.Now()
					j, err := submit(ctx, cl, tarball)
					lat[k] = time.Since(t0)
					if err != nil {
						errOnce.Do(func() { firstErr = err })
						return
					}
					ids[k] = j.ID
				}
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		submitted := slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == "" })
		if firstErr != nil {
			cancelAll(ctx, d.client, submitted)
			return fmt.Errorf("run %d: %w", run, firstErr)
		}
		// Admission only: the blocker must still hold the slot.
		running, _, err := d.client.List(ctx, gantry.JobFilter{Limit: 10, States: []gantry.State{gantry.StateBuilding, gantry.StateRunning}})
		if err != nil {
			return err
		}
		if len(running) != 1 || running[0].ID != blocker.ID {
			return fmt.Errorf("run %d: %d jobs under way, want only the blocking one", run, len(running))
		}
		ms := make([]float64, n)
		for k, l := range lat {
			ms[k] = float64(l) / float64(time.Millisecond)
		}
		p50, p99 := percentile(ms, 0.50), percentile(ms, 0.99)
		if run == 0 {
			b.res.add("api/submit-p99-cold", gantrySide, p99)
		} else {
			b.res.add("api/submit-p50", gantrySide, p50)
			b.res.add("api/submit-p99", gantrySide, p99)
			b.res.add("api/submit-rate", gantrySide, float64(n)/wall.Seconds())
		}
		b.res.Raw[fmt.Sprintf("api/submit-latency-ms/run-%d", run)] = ms
		cstart := time.Now()
		if err := cancelAll(ctx, d.client, submitted); err != nil {
			return fmt.Errorf("run %d: cancel: %w", run, err)
		}
		log.Printf("admission %d/%d: %d submissions from %d clients in %.2fs: p50 %.1f ms, p99 %.1f ms, %.0f/s (cancelled in %.1fs)",
			run, b.cfg.runs, n, len(clients), wall.Seconds(), p50, p99, float64(n)/wall.Seconds(), time.Since(cstart).Seconds())
	}
	return cancelOne(ctx, d.client, blocker.ID)
}

// percentile is the nearest-rank percentile p (0..1] of v.
func percentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	k := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

// rssBusy reads gantryd's resident memory while 4 jobs train.
func (b *bench) rssBusy(ctx context.Context) error {
	d, err := b.startDaemon(ctx, "busy", "", "--max-jobs", "4", "--stop-timeout", "1s")
	if err != nil {
		return err
	}
	defer d.stop()
	tarball := b.sleepContext()
	for run := 1; run <= b.cfg.runs; run++ {
		var ids []string
		for range 4 {
			j, err := submit(ctx, d.client, tarball)
			if err != nil {
				cancelAll(ctx, d.client, ids)
				return err
			}
			ids = append(ids, j.ID)
		}
		for _, id := range ids {
			if _, err := waitState(ctx, d.client, id, 5*time.Minute, func(s gantry.State) bool { return s == gantry.StateRunning }); err != nil {
				cancelAll(ctx, d.client, ids)
				return err
			}
		}
		time.Sleep(2 * time.Second)
		st, err := d.stat()
		if err != nil {
			return err
		}
		b.res.add("api/rss-4jobs", gantrySide, float64(st.rssBytes)/mib)
		if err := cancelAll(ctx, d.client, ids); err != nil {
			return err
		}
		log.Printf("busy %d/%d: gantryd RSS %.1f MiB with 4 jobs training", run, b.cfg.runs, float64(st.rssBytes)/mib)
	}
	return nil
}

// list writes -records finished job records into a data file with the store
// package, starts a gantryd on it, and times pages of GET /v1/jobs: the
// newest 50, and 50 found with a before= cursor 99% of the way down.
func (b *bench) list(ctx context.Context) error {
	dataDir := filepath.Join(b.work, "data-ls")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	start := time.Now()
	deep, size, err := b.genRecords(ctx, filepath.Join(dataDir, "gantry.db"), b.cfg.records)
	if err != nil {
		return err
	}
	log.Printf("ls: wrote %d records (%.0f MiB) in %.1fs", b.cfg.records, float64(size)/mib, time.Since(start).Seconds())

	start = time.Now()
	d, err := b.startDaemon(ctx, "ls", dataDir)
	if err != nil {
		return err
	}
	defer d.stop()
	b.res.add("api/ls-start", gantrySide, time.Since(start).Seconds())
	const perRun = 10
	for run := 1; run <= b.cfg.runs; run++ {
		for _, page := range []struct{ row, before string }{{"api/ls-first", ""}, {"api/ls-deep", deep}} {
			for range perRun {
				t0 := time.Now()
				jobs, _, err := d.client.List(ctx, gantry.JobFilter{Limit: 50, Before: page.before})
				ms := float64(time.Since(t0)) / float64(time.Millisecond)
				if err != nil {
					return err
				}
				if len(jobs) != 50 {
					return fmt.Errorf("a page of %s held %d jobs, want 50", page.row, len(jobs))
				}
				b.res.add(page.row, gantrySide, ms)
			}
		}
		t0 := time.Now()
		if _, err := d.gantry(ctx, "ls", "-n", "50"); err != nil {
			return err
		}
		b.res.add("api/ls-cli", gantrySide, float64(time.Since(t0))/float64(time.Millisecond))
	}
	st, err := d.stat()
	if err != nil {
		return err
	}
	b.res.add("api/rss-100k", gantrySide, float64(st.rssBytes)/mib)
	b.res.add("api/rss-100k-anon", gantrySide, float64(st.anonBytes)/mib)
	log.Printf("ls: first page median %.1f ms, deep page median %.1f ms; gantryd RSS %.1f MiB (anonymous %.1f MiB)",
		median(b.res.samples["api/ls-first"][gantrySide]), median(b.res.samples["api/ls-deep"][gantrySide]),
		float64(st.rssBytes)/mib, float64(st.anonBytes)/mib)
	return nil
}

// genRecords writes n finished jobs, one transaction each as gantryd does,
// and returns the ID that a deep page starts before (the n/100-th oldest,
// or the 50th)
// and the file's size. bbolt syncs every commit, which on this project's
// disks is milliseconds: the file is written on a tmpfs (/dev/shm) when
// there is one, then copied to path.
func (b *bench) genRecords(ctx context.Context, path string, n int) (string, int64, error) {
	genDir, err := os.MkdirTemp("/dev/shm", "gantry-bench-")
	if err != nil {
		genDir, err = os.MkdirTemp(b.work, "gen-")
		if err != nil {
			return "", 0, err
		}
	}
	defer os.RemoveAll(genDir)
	genPath := filepath.Join(genDir, "gantry.db")
	st, err := store.Open(genPath)
	if err != nil {
		return "", 0, err
	}
	var deep string
	first := time.Now().Add(-time.Duration(n) * time.Minute)
	for i := range n {
		j, err := record(first.Add(time.Duration(i)*time.Minute), i, b.cfg.base)
		if err == nil {
			err = st.Create(ctx, j)
		}
		if err != nil {
			st.Close()
			return "", 0, fmt.Errorf("record %d: %w", i, err)
		}
		if i == max(n/100, 50) {
			deep = j.ID
		}
	}
	if err := st.Close(); err != nil {
		return "", 0, err
	}
	size, err := copyFile(genPath, path)
	return deep, size, err
}

// record is a finished Iris job as gantryd would have left it: nine in ten
// succeeded and pushed, one in ten rejected by its gate.
func record(created time.Time, i int, base string) (*gantry.Job, error) {
	gate := 0.9
	acc := 0.9 + float64(i%10)/100
	repo := fmt.Sprintf("127.0.0.1:5000/iris-%d", i%20)
	j := gantry.NewJob(gantry.Spec{
		Build:       gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{"BASE": base}},
		Push:        []string{repo + ":latest"},
		MinAccuracy: &gate,
	}, created)
	if i%10 == 0 {
		acc = 0.8667
	}
	sum := sha256.Sum256([]byte(j.ID))
	h := hex.EncodeToString(sum[:])
	t := created
	step := func(s gantry.State, after time.Duration) error {
		t = t.Add(after)
		return j.Move(s, t)
	}
	code := 0
	j.ContextSize = 4096
	if err := step(gantry.StateBuilding, 10*time.Millisecond); err != nil {
		return nil, err
	}
	j.Image = "sha256:" + h
	if err := step(gantry.StateRunning, 2*time.Second); err != nil {
		return nil, err
	}
	j.ContainerID = h
	j.ExitCode = &code
	j.Metrics.Accuracy = &acc
	if acc < gate {
		j.Error = fmt.Sprintf("accuracy %.4f is below the gate %.4f", acc, gate)
		return j, step(gantry.StateRejected, 3*time.Second)
	}
	j.GatePassed = true
	if err := step(gantry.StatePushing, 3*time.Second); err != nil {
		return nil, err
	}
	j.Pushes = []gantry.Push{{Ref: repo + ":latest", Digest: "sha256:" + h, Bytes: 298 << 20}}
	return j, step(gantry.StateSucceeded, 4*time.Second)
}

func copyFile(from, to string) (int64, error) {
	in, err := os.Open(from)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}
