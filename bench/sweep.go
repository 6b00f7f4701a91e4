package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Case 7: a sweep of the Iris trainer, 12 points, against the same grid
// done with the docker CLI in a loop.

// sweepPoints is the grid's size: SEED=1..12 (the Iris trainer reads
// nothing from its environment, so every point trains alike).
const sweepPoints = 12

// sweepMaxJobs is the --max-jobs of the bench's gantryd (its default).
const sweepMaxJobs = 2

var sweepSubmitted = regexp.MustCompile(`sweep (\S+) submitted`)

// sweep is case 7: after a one-line change to app.py (and a RUN step
// unique to the run, which BuildKit's cache record counts), `gantry sweep
// --param SEED=1,...,12 --push REF --wait` against the tutorial's loop: for
// each point docker build, docker run (reading the accuracy), keeping the
// best; then docker tag and docker push of the best. Both push to the warm
// repositories (the base layer is there). Reported: the wall time of each
// side, the builds (gantry's counted by BuildKit's own cache record, the
// docker side's by its docker build invocations: its classic builder
// answers all but the first from its cache), and gantry's wall time over
// ceil(12 / max-jobs) warm training runs, one run being the median
// `docker run --rm` of the loop (a warm run, one at a time).
func (b *bench) sweep(ctx context.Context) error {
	ws, err := b.warmUp(ctx)
	if err != nil {
		return err
	}
	seeds := make([]string, sweepPoints)
	for i := range seeds {
		seeds[i] = strconv.Itoa(i + 1)
	}
	for i := 1; i <= b.cfg.runs; i++ {
		nonce := fmt.Sprintf("%s-%d", b.nonce, i)
		gdir, err := b.sweepDir("sweep-gantry", nonce)
		if err != nil {
			return err
		}
		start := time.Now()
		out, err := b.gd.gantry(ctx, "sweep", gdir, "--build-arg", "BASE="+b.cfg.base, "--param", "SEED="+strings.Join(seeds, ","),
			"--push", ws.reg.addr+"/iris-gantry:sweep", "--wait")
		total := time.Since(start)
		b.gd.sweepTmp()
		if err != nil {
			return fmt.Errorf("run %d, gantry: %w", i, err)
		}
		builds, err := b.sweepCheck(ctx, out, nonce)
		if err != nil {
			return fmt.Errorf("run %d, gantry: %w", i, err)
		}
		ddir, err := b.sweepDir("sweep-docker", nonce)
		if err != nil {
			return err
		}
		dtotal, runs, err := b.dockerSweep(ctx, ddir, ws.reg.addr+"/iris-docker:sweep", seeds)
		if err != nil {
			return fmt.Errorf("run %d, docker: %w", i, err)
		}
		oneRun := median(runs)
		bound := math.Ceil(float64(sweepPoints)/sweepMaxJobs) * oneRun
		b.res.add("sweep/job", gantrySide, seconds(total))
		b.res.add("sweep/job", dockerSide, seconds(dtotal))
		b.res.add("sweep/builds", gantrySide, float64(builds))
		b.res.add("sweep/builds", dockerSide, sweepPoints)
		b.res.add("sweep/one-run", dockerSide, oneRun)
		b.res.add("sweep/over-bound", gantrySide, seconds(total)/bound)
		log.Printf("sweep %d/%d: gantry %.1fs (%d build), docker loop %.1fs (%d builds); one warm run %.2fs: gantry / (ceil(%d/%d) × run) = %.2f",
			i, b.cfg.runs, seconds(total), builds, seconds(dtotal), sweepPoints, oneRun, sweepPoints, sweepMaxJobs, seconds(total)/bound)
	}
	return nil
}

// sweepDir is the Iris trainer marked for run nonce: a one-line change to
// app.py, and a RUN step of its own after the app's COPY.
func (b *bench) sweepDir(name, nonce string) (string, error) {
	dir, err := b.trainerDir(name)
	if err != nil {
		return "", err
	}
	if err := b.mark(dir, "sweep "+nonce); err != nil {
		return "", err
	}
	f, err := os.OpenFile(filepath.Join(dir, "Dockerfile"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, "RUN echo %s > /bench-sweep\n", nonce)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return dir, err
}

// sweepCheck reads the sweep gantry sweep --wait printed: it must have
// succeeded with a winner, every point run from one image; it returns how
// many builds BuildKit's cache record of the run's RUN step counts.
func (b *bench) sweepCheck(ctx context.Context, out, nonce string) (int, error) {
	first, _, _ := strings.Cut(out, "\n")
	if !strings.Contains(first, "succeeded: winner") {
		return 0, fmt.Errorf("gantry sweep printed %q, not a sweep with a winner", tail(out, 400))
	}
	id := strings.Fields(first)[1]
	v, err := b.gd.client.GetSweep(ctx, id)
	if err != nil {
		return 0, err
	}
	b.defer_(func() { runQuiet("docker", "rmi", "gantry/sweep:"+id) })
	images := map[string]bool{}
	for _, jid := range v.Sweep.Jobs {
		j, err := b.gd.client.Get(ctx, jid)
		if err != nil {
			return 0, err
		}
		images[j.Image] = true
	}
	if len(v.Sweep.Jobs) != sweepPoints || len(images) != 1 {
		return 0, fmt.Errorf("sweep %s: %d points of %d images, want %d of one", id, len(v.Sweep.Jobs), len(images), sweepPoints)
	}
	return buildkitUses(ctx, "echo "+nonce+" > /bench-sweep")
}

// buildkitUses sums the usage counts of BuildKit's cache records whose
// description holds step: each build that ran the step, or took it from the
// cache, counts one.
func buildkitUses(ctx context.Context, step string) (int, error) {
	out, err := runCmd(ctx, nil, "docker", "system", "df", "-v", "--format", "{{json .BuildCache}}")
	if err != nil {
		return 0, err
	}
	var records []struct{ Description, UsageCount string }
	if err := json.Unmarshal([]byte(out), &records); err != nil {
		return 0, fmt.Errorf("docker system df -v: %w", err)
	}
	n := 0
	for _, r := range records {
		if strings.Contains(r.Description, step) {
			c, _ := strconv.Atoi(r.UsageCount)
			n += c
		}
	}
	return n, nil
}

// dockerSweep is the grid by hand: for each seed, docker build, docker run
// (timed, reading the accuracy), keeping the best; then docker tag and
// docker push of the best. It returns the wall time and each run's
// seconds.
func (b *bench) dockerSweep(ctx context.Context, dir, ref string, seeds []string) (time.Duration, []float64, error) {
	name := "gantry-bench-sweep-" + b.nonce
	b.defer_(func() { runQuiet("docker", "rmi", name, ref) })
	var (
		runs []float64
		best = -1.0
	)
	start := time.Now()
	for _, s := range seeds {
		tag := name + ":seed-" + s
		b.defer_(func() { runQuiet("docker", "rmi", tag) })
		if _, err := runCmd(ctx, nil, "docker", "build", "-q", "-t", tag, "--build-arg", "BASE="+b.cfg.base, dir); err != nil {
			return 0, nil, err
		}
		t := time.Now()
		out, err := runCmd(ctx, nil, "docker", "run", "--rm", "-e", "SEED="+s, tag)
		if err != nil {
			return 0, nil, err
		}
		runs = append(runs, time.Since(t).Seconds())
		m := accuracyLine.FindStringSubmatch(out)
		if m == nil {
			return 0, nil, fmt.Errorf("docker run %s printed no accuracy: %q", tag, tail(out, 400))
		}
		if a, _ := strconv.ParseFloat(m[1], 64); a > best {
			if _, err := runCmd(ctx, nil, "docker", "tag", tag, name); err != nil {
				return 0, nil, err
			}
			best = a
		}
	}
	if _, err := runCmd(ctx, nil, "docker", "tag", name, ref); err != nil {
		return 0, nil, err
	}
	if _, err := runCmd(ctx, nil, "docker", "push", ref); err != nil {
		return 0, nil, err
	}
	return time.Since(start), runs, nil
}
