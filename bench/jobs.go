package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Cases 1-4: the Iris trainer's job, gantry against the docker CLI.

var (
	// outcomeLine is what gantry submit --wait -q prints first.
	outcomeLine = regexp.MustCompile(`(?m)^job (\S+) (\w+)(?:: accuracy ([0-9.]+))?`)
	// accuracyLine is what the Iris trainer prints.
	accuracyLine = regexp.MustCompile(`Model accuracy: ([0-9.]+)`)
)

// jobRun is one timed run of the workflow on one side.
type jobRun struct {
	total time.Duration
	// exitToTag is the time from the training container's exit (and
	// removal) to the tag being served by the registry: for gantry, the
	// record's times.run.finished to times.push.finished; for docker,
	// from `docker run --rm` returning to `docker push` returning.
	exitToTag time.Duration
	accuracy  float64
	id        string // gantry's job ID
	image     string // gantry/job:ID, or the image ID docker build made
}

// gantryJob runs `gantry submit DIR [--push REF] [EXTRA...] --wait -q`,
// timed end to end, and reads the job's record.
func (b *bench) gantryJob(ctx context.Context, d *daemon, dir, ref string, extra ...string) (jobRun, error) {
	var r jobRun
	args := append([]string{"submit", dir, "--build-arg", "BASE=" + b.cfg.base, "--wait", "-q"}, extra...)
	if ref != "" {
		args = append(args, "--push", ref)
	}
	start := time.Now()
	out, err := d.gantry(ctx, args...)
	r.total = time.Since(start)
	d.sweepTmp()
	if err != nil {
		return r, err
	}
	m := outcomeLine.FindStringSubmatch(out)
	if m == nil || m[2] != "succeeded" || m[3] == "" {
		return r, fmt.Errorf("gantry submit printed %q, not a succeeded job with an accuracy", out)
	}
	r.id = m[1]
	r.accuracy, _ = strconv.ParseFloat(m[3], 64)
	j, err := d.client.Get(ctx, r.id)
	if err != nil {
		return r, err
	}
	r.image = j.ImageName
	if ref != "" {
		if j.Times.Run.Finished == nil || j.Times.Push.Finished == nil {
			return r, fmt.Errorf("job %s: its record has no run or push end time", r.id)
		}
		r.exitToTag = j.Times.Push.Finished.Sub(*j.Times.Run.Finished)
	}
	return r, nil
}

// dockerJob runs the tutorial's four commands, timed end to end:
// docker build, docker run (reading the accuracy off its output), docker
// tag, docker push.
func (b *bench) dockerJob(ctx context.Context, dir, name, ref string) (jobRun, error) {
	var r jobRun
	start := time.Now()
	if _, err := runCmd(ctx, nil, "docker", "build", "-t", name, "--build-arg", "BASE="+b.cfg.base, dir); err != nil {
		return r, err
	}
	out, err := runCmd(ctx, nil, "docker", "run", "--rm", name)
	if err != nil {
		return r, err
	}
	ran := time.Now()
	if _, err := runCmd(ctx, nil, "docker", "tag", name, ref); err != nil {
		return r, err
	}
	if _, err := runCmd(ctx, nil, "docker", "push", ref); err != nil {
		return r, err
	}
	end := time.Now()
	r.total, r.exitToTag = end.Sub(start), end.Sub(ran)
	m := accuracyLine.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("docker run %s printed no accuracy: %q", name, tail(out, 400))
	}
	r.accuracy, _ = strconv.ParseFloat(m[1], 64)
	r.image, err = imageID(ctx, name)
	return r, err
}

func imageID(ctx context.Context, ref string) (string, error) {
	out, err := runCmd(ctx, nil, "docker", "image", "inspect", "--format", "{{.Id}}", ref)
	return strings.TrimSpace(out), err
}

// trainerDir copies the Iris trainer that gantry init wrote into a fresh
// directory.
func (b *bench) trainerDir(name string) (string, error) {
	dir := filepath.Join(b.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(b.template) // every file gantry init wrote
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		f := e.Name()
		data, err := os.ReadFile(filepath.Join(b.template, f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// mark makes app.py the template's plus one comment line: a change of one
// line from the run before, which makes the app layer new while every
// layer below it stays cached.
func (b *bench) mark(dir, line string) error {
	data, err := os.ReadFile(filepath.Join(b.template, "app.py"))
	if err != nil {
		return err
	}
	data = fmt.Appendf(data, "# bench: %s %s\n", line, b.nonce)
	return os.WriteFile(filepath.Join(dir, "app.py"), data, 0o644)
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// cold is case 1: the first job of the Iris trainer into an empty registry.
// Each run of each side gets a registry of its own, started empty. Both
// sides keep the build cache of the steps below app.py (a primed run makes
// it), and app.py gets a line no earlier run had, so the app layer is new.
func (b *bench) cold(ctx context.Context) error {
	d, err := b.mainDaemon(ctx)
	if err != nil {
		return err
	}
	gdir, err := b.trainerDir("cold-gantry")
	if err != nil {
		return err
	}
	ddir, err := b.trainerDir("cold-docker")
	if err != nil {
		return err
	}
	// Prime, untimed: BuildKit's cache for gantry; for docker's (legacy)
	// builder, a tagged image whose parent chain is the cache, so that
	// removing a run's image does not prune the cached steps.
	if err := b.mark(gdir, "cold prime"); err != nil {
		return err
	}
	p, err := b.gantryJob(ctx, d, gdir, "")
	if err != nil {
		return fmt.Errorf("prime: %w", err)
	}
	runQuiet("docker", "rmi", p.image)
	if err := b.mark(ddir, "cold prime"); err != nil {
		return err
	}
	anchor := "gantry-bench-cache:" + b.nonce
	if _, err := runCmd(ctx, nil, "docker", "build", "-t", anchor, "--build-arg", "BASE="+b.cfg.base, ddir); err != nil {
		return fmt.Errorf("prime: %w", err)
	}
	b.defer_(func() { runQuiet("docker", "rmi", anchor) })

	n := b.cfg.heavyRuns
	for i := 1; i <= n; i++ {
		// gantry
		reg, err := b.startRegistry(ctx, fmt.Sprintf("cold-gantry-%d", i))
		if err != nil {
			return err
		}
		if err := b.mark(gdir, fmt.Sprintf("cold gantry run %d", i)); err != nil {
			reg.stop()
			return err
		}
		g, err := b.gantryJob(ctx, d, gdir, fmt.Sprintf("%s/iris-cold-gantry-%d:latest", reg.addr, i))
		reg.stop()
		if g.image != "" {
			runQuiet("docker", "rmi", g.image)
		}
		if err != nil {
			return fmt.Errorf("run %d, gantry: %w", i, err)
		}
		b.res.add("cold/job", gantrySide, seconds(g.total))
		b.res.add("cold/exit-to-tag", gantrySide, seconds(g.exitToTag))
		b.res.add("accuracy", gantrySide, g.accuracy)

		// gantry again, as a fresh gantryd's first job: no layer kept
		// compressed from earlier jobs.
		f, err := b.freshColdJob(ctx, gdir, i)
		if err != nil {
			return fmt.Errorf("run %d, gantry (fresh gantryd): %w", i, err)
		}
		b.res.add("cold/job-fresh", gantrySide, seconds(f.total))

		// docker
		reg, err = b.startRegistry(ctx, fmt.Sprintf("cold-docker-%d", i))
		if err != nil {
			return err
		}
		if err := b.mark(ddir, fmt.Sprintf("cold docker run %d", i)); err != nil {
			reg.stop()
			return err
		}
		name := fmt.Sprintf("gantry-bench-cold-%s-%d", b.nonce, i)
		ref := fmt.Sprintf("%s/iris-cold-docker-%d:latest", reg.addr, i)
		dr, err := b.dockerJob(ctx, ddir, name, ref)
		reg.stop()
		runQuiet("docker", "rmi", name, ref)
		if err != nil {
			return fmt.Errorf("run %d, docker: %w", i, err)
		}
		b.res.add("cold/job", dockerSide, seconds(dr.total))
		b.res.add("cold/job-fresh", dockerSide, seconds(dr.total))
		b.res.add("cold/exit-to-tag", dockerSide, seconds(dr.exitToTag))
		b.res.add("accuracy", dockerSide, dr.accuracy)
		log.Printf("cold %d/%d: gantry %.1fs (exit→tag %.1fs), fresh gantryd %.1fs, docker %.1fs (exit→tag %.1fs)",
			i, n, seconds(g.total), seconds(g.exitToTag), seconds(f.total), seconds(dr.total), seconds(dr.exitToTag))
	}
	return nil
}

// freshColdJob runs the cold job on a gantryd started for it on an empty
// data dir, into an empty registry, and removes both afterwards.
func (b *bench) freshColdJob(ctx context.Context, dir string, i int) (jobRun, error) {
	name := fmt.Sprintf("cold-fresh-%d", i)
	d, err := b.startDaemon(ctx, name, "")
	if err != nil {
		return jobRun{}, err
	}
	defer os.RemoveAll(d.dataDir)
	defer d.stop()
	reg, err := b.startRegistry(ctx, name)
	if err != nil {
		return jobRun{}, err
	}
	defer reg.stop()
	if err := b.mark(dir, fmt.Sprintf("cold fresh gantryd run %d", i)); err != nil {
		return jobRun{}, err
	}
	g, err := b.gantryJob(ctx, d, dir, fmt.Sprintf("%s/iris-cold-fresh-%d:latest", reg.addr, i))
	if g.image != "" {
		runQuiet("docker", "rmi", g.image)
	}
	return g, err
}

// warmState is what the warm, re-push and large cases share: one registry
// that already holds the Iris image of each side, each in its own
// repository.
type warmState struct {
	reg        *registry
	gdir, ddir string
	gref, dref string // where each side pushes
	dname      string // the docker side's local name
	lastJob    string // the gantry job whose image gref holds
}

func (b *bench) warmUp(ctx context.Context) (*warmState, error) {
	if b.warmSt != nil {
		return b.warmSt, nil
	}
	d, err := b.mainDaemon(ctx)
	if err != nil {
		return nil, err
	}
	reg, err := b.startRegistry(ctx, "warm")
	if err != nil {
		return nil, err
	}
	b.defer_(reg.stop)
	ws := &warmState{
		reg:   reg,
		gref:  reg.addr + "/iris-gantry:latest",
		dref:  reg.addr + "/iris-docker:latest",
		dname: "gantry-bench-warm-" + b.nonce,
	}
	b.defer_(func() { runQuiet("docker", "rmi", ws.dname, ws.dref) })
	if ws.gdir, err = b.trainerDir("warm-gantry"); err != nil {
		return nil, err
	}
	if ws.ddir, err = b.trainerDir("warm-docker"); err != nil {
		return nil, err
	}
	// The first job of each side, untimed: it pushes the base layer.
	if err := b.mark(ws.gdir, "warm prime"); err != nil {
		return nil, err
	}
	g, err := b.gantryJob(ctx, d, ws.gdir, ws.gref)
	if g.image != "" {
		b.defer_(func() { runQuiet("docker", "rmi", g.image) })
	}
	if err != nil {
		return nil, fmt.Errorf("warm-up, gantry: %w", err)
	}
	ws.lastJob = g.id
	if err := b.mark(ws.ddir, "warm prime"); err != nil {
		return nil, err
	}
	dr, err := b.dockerJob(ctx, ws.ddir, ws.dname, ws.dref)
	if dr.image != "" {
		b.defer_(func() { runQuiet("docker", "rmi", dr.image) })
	}
	if err != nil {
		return nil, fmt.Errorf("warm-up, docker: %w", err)
	}
	b.warmSt = ws
	return ws, nil
}

// warm is case 2: a one-line change to app.py, then the job again, pushing
// to the same reference as before.
func (b *bench) warm(ctx context.Context) error {
	ws, err := b.warmUp(ctx)
	if err != nil {
		return err
	}
	for i := 1; i <= b.cfg.runs; i++ {
		if err := b.mark(ws.gdir, fmt.Sprintf("warm run %d", i)); err != nil {
			return err
		}
		g, err := b.gantryJob(ctx, b.gd, ws.gdir, ws.gref)
		if g.image != "" {
			b.defer_(func() { runQuiet("docker", "rmi", g.image) })
		}
		if err != nil {
			return fmt.Errorf("run %d, gantry: %w", i, err)
		}
		ws.lastJob = g.id
		// The floor: the image gantry built, run by itself.
		t0 := time.Now()
		out, err := runCmd(ctx, nil, "docker", "run", "--rm", g.image)
		alone := time.Since(t0)
		if err != nil {
			return fmt.Errorf("run %d, docker run --rm %s: %w", i, g.image, err)
		}
		if !accuracyLine.MatchString(out) {
			return fmt.Errorf("run %d: docker run --rm %s printed no accuracy: %q", i, g.image, tail(out, 400))
		}
		b.res.add("warm/run-alone", dockerSide, seconds(alone))
		b.res.add("warm/overhead", gantrySide, seconds(g.total-alone))
		b.res.add("warm/job", gantrySide, seconds(g.total))
		b.res.add("warm/exit-to-tag", gantrySide, seconds(g.exitToTag))
		b.res.add("accuracy", gantrySide, g.accuracy)

		if err := b.mark(ws.ddir, fmt.Sprintf("warm run %d", i)); err != nil {
			return err
		}
		dr, err := b.dockerJob(ctx, ws.ddir, ws.dname, ws.dref)
		if dr.image != "" {
			b.defer_(func() { runQuiet("docker", "rmi", dr.image) })
		}
		if err != nil {
			return fmt.Errorf("run %d, docker: %w", i, err)
		}
		b.res.add("warm/job", dockerSide, seconds(dr.total))
		b.res.add("warm/exit-to-tag", dockerSide, seconds(dr.exitToTag))
		b.res.add("accuracy", dockerSide, dr.accuracy)
		log.Printf("warm %d/%d: gantry %.2fs (exit→tag %.2fs; the image alone %.2fs, overhead %.3fs), docker %.2fs (exit→tag %.2fs)",
			i, b.cfg.runs, seconds(g.total), seconds(g.exitToTag), seconds(alone), seconds(g.total-alone), seconds(dr.total), seconds(dr.exitToTag))
	}
	return nil
}

// repush is case 3: pushing again an image the registry already has:
// `gantry push ID` against `docker push REF`. It also reads from /proc how
// many bytes gantryd read and wrote (read(2) and write(2) on files and
// sockets: the engine's docker save stream counts, and so does the
// temporary file it is buffered in) and how much CPU it used during the
// push, which says whether layers were read from the engine and compressed
// again.
func (b *bench) repush(ctx context.Context) error {
	ws, err := b.warmUp(ctx)
	if err != nil {
		return err
	}
	d := b.gd
	for i := 1; i <= b.cfg.runs; i++ {
		before, err := d.stat()
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := d.gantry(ctx, "push", ws.lastJob); err != nil {
			return fmt.Errorf("run %d, gantry: %w", i, err)
		}
		g := time.Since(start)
		after, err := d.stat()
		if err != nil {
			return err
		}
		b.res.add("repush/push", gantrySide, seconds(g))
		b.res.add("repush/read", gantrySide, float64(after.readBytes-before.readBytes)/1e6)
		b.res.add("repush/cpu", gantrySide, seconds(after.cpu-before.cpu))
		b.res.add("repush/written", gantrySide, float64(after.writeBytes-before.writeBytes)/1e6)
		d.sweepTmp()

		start = time.Now()
		if _, err := runCmd(ctx, nil, "docker", "push", ws.dref); err != nil {
			return fmt.Errorf("run %d, docker: %w", i, err)
		}
		dt := time.Since(start)
		b.res.add("repush/push", dockerSide, seconds(dt))
		log.Printf("repush %d/%d: gantry %.2fs (read %.0f MB, CPU %.1fs), docker %.2fs", i, b.cfg.runs,
			seconds(g), float64(after.readBytes-before.readBytes)/1e6, seconds(after.cpu-before.cpu), seconds(dt))
	}
	return nil
}

// large is case 4: the Iris trainer plus model data in a layer of its own.
// Each run makes new model data (so its layer is new to the registry: the
// first push), then changes one line of app.py (the push after a small
// change). Both push to the repository where their warm-up job pushed, so
// the base layer is in the registry already and what a first push adds is
// the model. The build and training are untimed: gantry's job runs without
// --push and the push is `gantry push ID --to REF`, against `docker push`.
func (b *bench) large(ctx context.Context) error {
	ws, err := b.warmUp(ctx)
	if err != nil {
		return err
	}
	d := b.gd
	gdir, err := b.largeDir("large-gantry")
	if err != nil {
		return err
	}
	ddir, err := b.largeDir("large-docker")
	if err != nil {
		return err
	}
	n := b.cfg.heavyRuns
	for i := 1; i <= n; i++ {
		// gantry
		if err := b.writeModel(gdir, fmt.Sprintf("gantry %d", i)); err != nil {
			return err
		}
		gref := fmt.Sprintf("%s/iris-gantry:large-%d", ws.reg.addr, i)
		var gt [2]time.Duration
		var images []string
		for k, change := range []string{"first", "changed"} {
			if err := b.mark(gdir, fmt.Sprintf("large gantry run %d %s", i, change)); err != nil {
				return err
			}
			j, err := b.gantryJob(ctx, d, gdir, "")
			if j.image != "" {
				images = append(images, j.image)
			}
			if err != nil {
				removeImages(images)
				return fmt.Errorf("run %d, gantry job: %w", i, err)
			}
			before, _ := d.stat()
			start := time.Now()
			_, err = d.gantry(ctx, "push", j.id, "--to", gref)
			gt[k] = time.Since(start)
			after, _ := d.stat()
			d.sweepTmp()
			if err != nil {
				removeImages(images)
				return fmt.Errorf("run %d, gantry push: %w", i, err)
			}
			b.res.add("large/"+change, gantrySide, seconds(gt[k]))
			b.res.add("large/"+change+"-read", gantrySide, float64(after.readBytes-before.readBytes)/1e6)
		}
		removeImages(images)

		// docker
		if err := b.writeModel(ddir, fmt.Sprintf("docker %d", i)); err != nil {
			return err
		}
		name := fmt.Sprintf("gantry-bench-large-%s-%d", b.nonce, i)
		dref := fmt.Sprintf("%s/iris-docker:large-%d", ws.reg.addr, i)
		var dt [2]time.Duration
		images = nil
		for k, change := range []string{"first", "changed"} {
			if err := b.mark(ddir, fmt.Sprintf("large docker run %d %s", i, change)); err != nil {
				return err
			}
			if _, err := runCmd(ctx, nil, "docker", "build", "-t", name, "--build-arg", "BASE="+b.cfg.base, ddir); err != nil {
				removeImages(images)
				return fmt.Errorf("run %d, docker build: %w", i, err)
			}
			id, err := imageID(ctx, name)
			if err == nil {
				images = append(images, id)
				_, err = runCmd(ctx, nil, "docker", "tag", name, dref)
			}
			if err != nil {
				removeImages(images)
				return fmt.Errorf("run %d: %w", i, err)
			}
			start := time.Now()
			_, err = runCmd(ctx, nil, "docker", "push", dref)
			dt[k] = time.Since(start)
			if err != nil {
				removeImages(images)
				return fmt.Errorf("run %d, docker push: %w", i, err)
			}
			b.res.add("large/"+change, dockerSide, seconds(dt[k]))
		}
		runQuiet("docker", "rmi", name, dref)
		removeImages(images)
		log.Printf("large %d/%d: first push gantry %.1fs docker %.1fs; after a change gantry %.1fs docker %.1fs",
			i, n, seconds(gt[0]), seconds(dt[0]), seconds(gt[1]), seconds(dt[1]))
	}
	return nil
}

func removeImages(images []string) {
	if len(images) > 0 {
		runQuiet("docker", append([]string{"rmi", "-f"}, images...)...)
	}
}

// largeDir is the Iris trainer with model.bin copied in a layer of its own,
// below app.py.
func (b *bench) largeDir(name string) (string, error) {
	dir, err := b.trainerDir(name)
	if err != nil {
		return "", err
	}
	df := filepath.Join(dir, "Dockerfile")
	data, err := os.ReadFile(df)
	if err != nil {
		return "", err
	}
	s := string(data)
	if !strings.Contains(s, "COPY app.py .") {
		return "", fmt.Errorf("the Iris Dockerfile has no line %q to put the model before", "COPY app.py .")
	}
	s = strings.Replace(s, "COPY app.py .", "COPY model.bin .\nCOPY app.py .", 1)
	return dir, os.WriteFile(df, []byte(s), 0o644)
}

// writeModel writes -model-mb MB of pseudo-random bytes, which compress as
// badly as trained weights do, seeded by seed and the run's nonce.
func (b *bench) writeModel(dir, seed string) error {
	f, err := os.Create(filepath.Join(dir, "model.bin"))
	if err != nil {
		return err
	}
	r := rand.NewChaCha8(sha256.Sum256([]byte(seed + " " + b.nonce)))
	buf := make([]byte, 1<<20)
	for range b.cfg.modelMB {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
