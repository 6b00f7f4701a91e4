package main

import (
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// Case 9: soak. Many small jobs through one gantryd with retention on
// (--retain 0 --retain-per-image 10, --max-jobs 2): the disk that the data
// dir and the engine (gantry's images, the build cache) take must stay
// flat once the first cycle of jobs has been pruned.

// soakPerImage is the soak gantryd's --retain-per-image.
const soakPerImage = 10

// soakSample is what the disk held after Jobs jobs had ended.
type soakSample struct {
	Jobs     int     `json:"jobs"`
	DataMB   float64 `json:"data_mb"`   // the data dir, as du counts it
	ImagesMB float64 `json:"images_mb"` // gantry's job images, the layers they share with nothing else
	Images   int     `json:"images"`    // gantry's job images in the engine
	CacheMB  float64 `json:"cache_mb"`  // the engine's build cache (all of it: other builds count too)
	Records  int     `json:"records"`   // job records left
}

// soak is case 9: cfg.soakJobs jobs of a one-line trainer, each a new
// build (its train.py differs), two at a time, with the disk sampled every
// cfg.soakEvery jobs.
func (b *bench) soak(ctx context.Context) error {
	d, err := b.startDaemon(ctx, "soak", "", "--max-jobs", "2", "--retain", "0",
		"--retain-per-image", fmt.Sprint(soakPerImage))
	if err != nil {
		return err
	}
	b.defer_(func() { soakCleanup(d) })
	eng, err := runner.Dial(ctx, "")
	if err != nil {
		return err
	}
	defer eng.Close()
	var (
		ours    sync.Map // the IDs of the soak's jobs
		done    atomic.Int64
		mu      sync.Mutex
		samples []soakSample
		errs    = make(chan error, 2)
		next    = make(chan int)
	)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := b.soakJob(ctx, d, w, i)
				if err != nil {
					errs <- fmt.Errorf("job %d: %w", i, err)
					return
				}
				ours.Store(id, true)
				n := int(done.Add(1))
				if n%b.cfg.soakEvery != 0 && n != b.cfg.soakJobs {
					continue
				}
				s, err := soakMeasure(ctx, d, eng.Client(), n, &ours)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
				log.Printf("soak %d/%d: data dir %.1f MB, %d job images %.1f MB, build cache %.1f MB, %d records (%.2f s a job)",
					n, b.cfg.soakJobs, s.DataMB, s.Images, s.ImagesMB, s.CacheMB, s.Records, time.Since(start).Seconds()/float64(n))
			}
		}()
	}
	err = func() error {
		defer close(next)
		for i := range b.cfg.soakJobs {
			select {
			case next <- i:
			case err := <-errs:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}()
	wg.Wait()
	if err == nil && len(errs) > 0 {
		err = <-errs
	}
	if err != nil {
		return err
	}
	b.soakReport(samples, time.Since(start))
	return nil
}

// soakJob runs job i of the soak on d, from worker w's directory, and
// returns its ID.
func (b *bench) soakJob(ctx context.Context, d *daemon, w, i int) (string, error) {
	dir := filepath.Join(b.work, fmt.Sprintf("soak-%d", w))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	df := fmt.Sprintf("FROM %s\nCOPY train.py /train.py\nCMD [\"python3\", \"-u\", \"/train.py\"]\n", b.cfg.base)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	py := fmt.Sprintf("print('Model accuracy: 0.9')  # soak %s job %d\n", b.nonce, i)
	if err := os.WriteFile(filepath.Join(dir, "train.py"), []byte(py), 0o644); err != nil {
		return "", err
	}
	out, err := d.gantry(ctx, "submit", dir, "--wait", "-q")
	if err != nil {
		return "", err
	}
	m := outcomeLine.FindStringSubmatch(out)
	if m == nil || m[2] != "succeeded" {
		return "", fmt.Errorf("gantry submit printed %q, not a succeeded job", tail(out, 400))
	}
	return m[1], nil
}

// soakMeasure samples the disk after n jobs; ours holds the IDs of the
// soak's jobs (the engine may hold other gantryds' job images).
func soakMeasure(ctx context.Context, d *daemon, c *client.Client, n int, ours *sync.Map) (soakSample, error) {
	s := soakSample{Jobs: n, DataMB: float64(diskUse(d.dataDir)) / 1e6}
	jobs, _, err := d.client.List(ctx, gantry.JobFilter{Limit: 1000})
	if err != nil {
		return s, err
	}
	s.Records = len(jobs)
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	du, err := runner.DiskUsage(dctx, c, client.DiskUsageOptions{Images: true, BuildCache: true, Verbose: true})
	if err != nil {
		return s, err
	}
	for _, im := range du.Images.Items {
		for _, t := range im.RepoTags {
			if id, ok := strings.CutPrefix(t, "gantry/job:"); ok && mapHas(ours, id) {
				s.Images++
				s.ImagesMB += float64(im.Size-max(im.SharedSize, 0)) / 1e6
				break
			}
		}
	}
	s.CacheMB = float64(du.BuildCache.TotalSize) / 1e6
	return s, nil
}

// diskUse is what the files under dir take on disk, as du counts it.
func diskUse(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// soakReport turns the samples into rows: the first sample at or after
// job 100 (half the jobs, for a shorter soak) against the last.
func (b *bench) soakReport(samples []soakSample, took time.Duration) {
	if len(samples) == 0 {
		return
	}
	ref := samples[len(samples)-1]
	for _, s := range samples {
		if s.Jobs >= min(100, b.cfg.soakJobs/2) {
			ref = s
			break
		}
	}
	last := samples[len(samples)-1]
	engine := func(s soakSample) float64 { return s.ImagesMB + s.CacheMB }
	r := b.res
	r.add("soak/data-ref", gantrySide, ref.DataMB)
	r.add("soak/data-last", gantrySide, last.DataMB)
	r.add("soak/engine-ref", gantrySide, engine(ref))
	r.add("soak/engine-last", gantrySide, engine(last))
	if ref.DataMB > 0 {
		r.add("soak/data-growth", gantrySide, last.DataMB/ref.DataMB)
	}
	if engine(ref) > 0 {
		r.add("soak/engine-growth", gantrySide, engine(last)/engine(ref))
	}
	r.add("soak/images-ref", gantrySide, float64(ref.Images))
	r.add("soak/images", gantrySide, float64(last.Images))
	r.add("soak/job", gantrySide, took.Seconds()/float64(b.cfg.soakJobs))
	for _, s := range samples {
		r.Raw["soak/jobs"] = append(r.Raw["soak/jobs"], float64(s.Jobs))
		r.Raw["soak/data-mb"] = append(r.Raw["soak/data-mb"], s.DataMB)
		r.Raw["soak/images-mb"] = append(r.Raw["soak/images-mb"], s.ImagesMB)
		r.Raw["soak/images"] = append(r.Raw["soak/images"], float64(s.Images))
		r.Raw["soak/cache-mb"] = append(r.Raw["soak/cache-mb"], s.CacheMB)
		r.Raw["soak/records"] = append(r.Raw["soak/records"], float64(s.Records))
	}
	log.Printf("soak: %d jobs in %s; data dir %.1f → %.1f MB, engine %.1f → %.1f MB (job %d → %d)",
		b.cfg.soakJobs, took.Round(time.Second), ref.DataMB, last.DataMB, engine(ref), engine(last), ref.Jobs, last.Jobs)
}

// soakCleanup stops d and removes the images of the jobs it kept.
func soakCleanup(d *daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	jobs, _, _ := d.client.List(ctx, gantry.JobFilter{Limit: 1000})
	d.stop()
	var refs []string
	for _, j := range jobs {
		refs = append(refs, j.ImageName)
	}
	removeImages(refs)
}

func mapHas(m *sync.Map, k string) bool {
	_, ok := m.Load(k)
	return ok
}
