package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/gantry-ml/gantry/internal/lab"
)

// Case 8: scale-out. The Iris trainer's jobs on a real Docker Swarm (the
// internal/lab cluster: a manager and three workers, each a dockerd in a
// network namespace of its own), built on a standalone buildkitd and staged
// by digest in the lab's registry.

// scaleJobs is the batch each side of the throughput row trains.
const scaleJobs = 12

// scaleCPUs is each job's --cpus: the swarm backend reserves what a job may
// use, and a lab node offers the machine's CPUs, so a node trains one job at
// a time (the same per-node limit on both sides).
func scaleCPUs() string { return strconv.Itoa(max(1, runtime.NumCPU())) }

// scale is case 8: (a) a batch of 12 jobs placed on one worker against the
// same batch on three workers, each node training one job at a time: the
// throughput ratio; (b) one warm job on the swarm against the same job on
// the local engine (the main gantryd), back to back: the swarm's per-job
// overhead (staging, scheduling, the nodes' pulls by digest, outputs through
// the collector).
func (b *bench) scale(ctx context.Context) error {
	sw, bk, err := b.scaleLab(ctx)
	if err != nil {
		return err
	}
	reg := sw.Registry
	d, err := b.startDaemon(ctx, "swarm", "",
		"--backend", "swarm", "--docker-host", sw.Manager().Host,
		"--staging-repo", reg+"/gantry/staging", "--insecure-registry", reg,
		"--buildkit-addr", bk.Addr, "--buildkit-tls-ca", bk.CACert, "--buildkit-tls-cert", bk.Cert, "--buildkit-tls-key", bk.Key,
		"--build-cache", reg+"/gantry/cache", "--max-jobs", strconv.Itoa(scaleJobs))
	if err != nil {
		return err
	}
	b.defer_(d.stop)
	local, err := b.mainDaemon(ctx)
	if err != nil {
		return err
	}
	dir, err := b.trainerDir("scale")
	if err != nil {
		return err
	}
	if err := b.mark(dir, "scale "+b.nonce); err != nil {
		return err
	}
	swarmBase := "BASE=" + sw.Image(b.cfg.base)
	workers := sw.Nodes[1:]
	// Warm-up, untimed: the build, and each worker pulls the base once.
	for _, w := range workers {
		if _, err := b.scaleJob(ctx, d, dir, swarmBase, "node.id=="+w.ID); err != nil {
			return fmt.Errorf("warm-up on %s: %w", w.Hostname, err)
		}
	}
	if _, err := b.scaleJob(ctx, local, dir, "BASE="+b.cfg.base, ""); err != nil {
		return fmt.Errorf("warm-up, local: %w", err)
	}
	for i := 1; i <= b.cfg.runs; i++ {
		one, err := b.scaleBatch(ctx, d, dir, swarmBase, "node.id=="+workers[0].ID)
		if err != nil {
			return fmt.Errorf("run %d, 1 worker: %w", i, err)
		}
		three, err := b.scaleBatch(ctx, d, dir, swarmBase, "node.role==worker")
		if err != nil {
			return fmt.Errorf("run %d, %d workers: %w", i, len(workers), err)
		}
		js, err := b.scaleJob(ctx, d, dir, swarmBase, "node.role==worker")
		if err != nil {
			return fmt.Errorf("run %d, one swarm job: %w", i, err)
		}
		jl, err := b.scaleJob(ctx, local, dir, "BASE="+b.cfg.base, "")
		if err != nil {
			return fmt.Errorf("run %d, one local job: %w", i, err)
		}
		b.res.add("scale/batch-1", gantrySide, seconds(one))
		b.res.add("scale/batch-3", gantrySide, seconds(three))
		b.res.add("scale/speedup", gantrySide, seconds(one)/seconds(three))
		b.res.add("scale/job-swarm", gantrySide, seconds(js))
		b.res.add("scale/job-local", gantrySide, seconds(jl))
		b.res.add("scale/overhead", gantrySide, seconds(js-jl))
		log.Printf("scale %d/%d: %d jobs on 1 worker %.1fs, on %d workers %.1fs (%.2fx); one job: swarm %.2fs, local %.2fs",
			i, b.cfg.runs, scaleJobs, seconds(one), len(workers), seconds(three), seconds(one)/seconds(three), seconds(js), seconds(jl))
	}
	return nil
}

// scaleLab starts the swarm lab (a manager and three workers) and a
// buildkitd that reaches its registry; both stop when the benchmark ends.
func (b *bench) scaleLab(ctx context.Context) (*lab.Swarm, *lab.BuildKit, error) {
	sw, err := lab.StartSwarm(ctx, lab.SwarmOptions{Nodes: 4, Images: []string{b.cfg.base}, Log: os.Stderr})
	if err != nil {
		return nil, nil, fmt.Errorf("the swarm lab: %w", err)
	}
	b.defer_(func() { sw.Close() })
	bk, err := lab.StartBuildKit(ctx, lab.BuildKitOptions{InsecureRegistries: []string{sw.Registry}})
	if err != nil {
		return nil, nil, fmt.Errorf("the lab's buildkitd: %w", err)
	}
	b.defer_(func() { bk.Close() })
	return sw, bk, nil
}

// scaleJob runs one job of the Iris trainer in dir on d, placed by
// constraint (none: the local engine), and returns its wall time, submit to
// the end of --wait.
func (b *bench) scaleJob(ctx context.Context, d *daemon, dir, baseArg, constraint string) (time.Duration, error) {
	args := []string{"submit", dir, "--build-arg", baseArg, "--wait", "-q"}
	if constraint != "" {
		args = append(args, "--constraint", constraint, "--cpus", scaleCPUs())
	}
	start := time.Now()
	out, err := d.gantry(ctx, args...)
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if m := outcomeLine.FindStringSubmatch(out); m == nil || m[2] != "succeeded" || m[3] == "" {
		return took, fmt.Errorf("gantry submit printed %q, not a succeeded job with an accuracy", tail(out, 400))
	}
	return took, nil
}

// scaleBatch submits scaleJobs jobs at once, placed by constraint, and
// returns the time from the first submission to the last job's end.
func (b *bench) scaleBatch(ctx context.Context, d *daemon, dir, baseArg, constraint string) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, scaleJobs)
	var wg sync.WaitGroup
	for i := range scaleJobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.scaleJob(ctx, d, dir, baseArg, constraint)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
