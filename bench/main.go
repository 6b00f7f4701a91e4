// Command bench measures gantry against the docker CLI workflow it replaces
// (docker build, docker run, docker tag, docker push), on this machine, in
// one process tree, alternating the two sides run by run (gantry, docker,
// gantry, docker, ...) so that both see the same load. It builds gantryd and
// gantry into a temporary directory, starts its own gantryd and its own
// registries, and writes every sample, the medians, the spread and the
// ratios gantry/docker to results.json and results.md under -out.
//
// Run it with `make bench` (which first brings up dockerd, the base image and
// the registry tools with `make services`), or:
//
//	go run ./bench [-runs 5] [-heavy-runs N] [-cases cold,warm,repush,large,api,outputs,sweep,scale,soak] [-soak-jobs 500] [-out bench/results]
//
// BENCHMARKS.md at the repository root says how to read the results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// allCases lists the cases in the order they run.
var allCases = []string{"cold", "warm", "repush", "large", "api", "outputs", "sweep", "scale", "soak"}

type config struct {
	runs        int // runs of each case
	heavyRuns   int // runs of the cold and large cases
	cases       []string
	out         string
	base        string // the base image of the Iris trainer
	modelMB     int    // size of the large image's model layer
	records     int    // job records for the ls case
	submissions int    // submissions in one admission burst
	clients     int    // concurrent clients of a burst
	debug       bool   // gantryd --debug
	keep        bool   // keep the scratch directory
	soakJobs    int    // jobs of the soak case
	soakEvery   int    // the soak samples the disk every this many jobs
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	var (
		cfg   config
		cases string
	)
	flag.IntVar(&cfg.runs, "runs", 5, "runs of each case (each run is one gantry and one docker sample)")
	flag.IntVar(&cfg.heavyRuns, "heavy-runs", 0, "runs of the cold and large cases, the slow ones (0: -runs)")
	flag.StringVar(&cases, "cases", strings.Join(allCases, ","), "comma list of cases to run: "+strings.Join(allCases, ", "))
	flag.StringVar(&cfg.out, "out", "bench/results", "directory for results.json and results.md")
	flag.StringVar(&cfg.base, "base", envOr("GANTRY_BASE_IMAGE", "gantry/python-ml:bookworm"), "base image of the Iris trainer")
	flag.IntVar(&cfg.modelMB, "model-mb", 300, "size in MB of the model data layer of the large image")
	flag.IntVar(&cfg.records, "records", 100000, "job records in the data file of the ls case")
	flag.IntVar(&cfg.submissions, "submissions", 1000, "job submissions in one admission burst")
	flag.IntVar(&cfg.clients, "clients", 50, "concurrent clients of an admission burst")
	flag.BoolVar(&cfg.debug, "debug", false, "start each gantryd with --debug: its log traces each submit and each job step (see BENCHMARKS.md)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the scratch directory (daemons' logs and data) under /var/tmp")
	flag.IntVar(&cfg.soakJobs, "soak-jobs", 500, "jobs through one gantryd with retention on, in the soak case")
	flag.IntVar(&cfg.soakEvery, "soak-every", 50, "the soak case samples the disk every this many jobs")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments %q (see -h)", flag.Args())
	}
	if cfg.heavyRuns <= 0 {
		cfg.heavyRuns = cfg.runs
	}
	for _, c := range strings.Split(cases, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !slices.Contains(allCases, c) {
			log.Fatalf("unknown case %q: want some of %s", c, strings.Join(allCases, ","))
		}
		cfg.cases = append(cfg.cases, c)
	}
	if cfg.soakJobs < 1 || cfg.soakEvery < 1 {
		log.Fatal("-soak-jobs and -soak-every must be at least 1")
	}
	if cfg.runs < 1 || len(cfg.cases) == 0 {
		log.Fatal("nothing to run: -runs must be at least 1 and -cases must name a case")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg config) error {
	b, err := newBench(ctx, cfg)
	if b != nil {
		defer b.close()
	}
	if err != nil {
		return err
	}
	var failed []string
	for _, c := range allCases {
		if !slices.Contains(cfg.cases, c) {
			continue
		}
		log.Printf("case %s", c)
		start := time.Now()
		var err error
		switch c {
		case "cold":
			err = b.cold(ctx)
		case "warm":
			err = b.warm(ctx)
		case "repush":
			err = b.repush(ctx)
		case "large":
			err = b.large(ctx)
		case "api":
			err = b.api(ctx)
		case "outputs":
			err = b.outputs(ctx)
		case "sweep":
			err = b.sweep(ctx)
		case "scale":
			err = b.scale(ctx)
		case "soak":
			err = b.soak(ctx)
		}
		b.res.CaseSeconds[c] = time.Since(start).Seconds()
		if err != nil {
			log.Printf("case %s failed: %v", c, err)
			b.res.Errors = append(b.res.Errors, fmt.Sprintf("%s: %v", c, err))
			failed = append(failed, c)
			if ctx.Err() != nil {
				break
			}
		}
		// Write as we go: a run cut short still leaves what it measured.
		if err := b.write(); err != nil {
			return err
		}
	}
	if err := b.write(); err != nil {
		return err
	}
	log.Printf("wrote %s and %s in %s", filepath.Join(cfg.out, "results.json"), filepath.Join(cfg.out, "results.md"),
		time.Since(b.started).Round(time.Second))
	if len(failed) > 0 {
		return fmt.Errorf("cases failed: %s (see above)", strings.Join(failed, ", "))
	}
	return nil
}

// bench holds what the cases share: the binaries, a scratch directory, the
// main gantryd and the results.
type bench struct {
	cfg      config
	started  time.Time
	bin      string // gantryd and gantry
	work     string // scratch: registries' storage, build contexts, data dirs
	template string // the Iris trainer as gantry init writes it
	nonce    string // makes this run's names and app.py lines unique
	gd       *daemon
	res      *results
	warmSt   *warmState
	cleanups []func()
}

func newBench(ctx context.Context, cfg config) (*bench, error) {
	b := &bench{cfg: cfg, started: time.Now(), nonce: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)}
	if err := preflight(ctx, cfg.base); err != nil {
		return nil, fmt.Errorf("%w\nStart what the benchmark needs with: make services", err)
	}
	// /var/tmp, not /tmp: the registries store gigabytes, and /tmp may be
	// a tmpfs.
	work, err := os.MkdirTemp("/var/tmp", "gantry-bench-")
	if err != nil {
		return nil, err
	}
	b.work = work
	b.defer_(func() {
		if cfg.keep {
			log.Printf("kept %s", work)
			return
		}
		os.RemoveAll(work)
	})
	b.bin = filepath.Join(work, "bin")
	log.Printf("building gantryd and gantry into %s", b.bin)
	root, err := moduleRoot(ctx)
	if err != nil {
		return b, err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", b.bin+"/", "./cmd/gantryd", "./cmd/gantry")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return b, fmt.Errorf("go build: %v\n%s", err, out)
	}
	b.res = newResults(ctx, cfg, b.started)
	b.template = filepath.Join(work, "iris-template")
	if _, err := runCmd(ctx, nil, filepath.Join(b.bin, "gantry"), "init", "--base", cfg.base, b.template); err != nil {
		return b, err
	}
	return b, nil
}

// defer_ registers f to run when the benchmark ends, after those registered
// later.
func (b *bench) defer_(f func()) { b.cleanups = append(b.cleanups, f) }

func (b *bench) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
}

// mainDaemon returns the gantryd the job cases share, starting it once.
func (b *bench) mainDaemon(ctx context.Context) (*daemon, error) {
	if b.gd != nil {
		return b.gd, nil
	}
	d, err := b.startDaemon(ctx, "main", "")
	if err != nil {
		return nil, err
	}
	b.defer_(d.stop)
	b.gd = d
	return d, nil
}

func preflight(ctx context.Context, base string) error {
	if _, err := runCmd(ctx, nil, "docker", "version", "--format", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("no Docker engine answers: %w", err)
	}
	if _, err := runCmd(ctx, nil, "docker", "image", "inspect", "--format", "{{.Id}}", base); err != nil {
		return fmt.Errorf("the base image %s is missing: %w", base, err)
	}
	if _, err := exec.LookPath("docker-registry"); err != nil {
		return errors.New("docker-registry is not installed (Debian's docker-registry package)")
	}
	return nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := runCmd(ctx, nil, "go", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(out)
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the benchmark from inside the gantry module (go run ./bench)")
	}
	return filepath.Dir(mod), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// runCmd runs a command and returns its standard output; its error carries
// the end of the standard error.
func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, tail(stderr.String(), 800))
	}
	return stdout.String(), nil
}

// runQuiet runs a command, discarding its output; used for clean-up.
func runQuiet(name string, args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.Run()
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

func goVersion() string { return runtime.Version() }
