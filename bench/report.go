package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

const (
	gantrySide = "gantry"
	dockerSide = "docker"
)

// rowDef says what a row of the table measures and what it is held to.
type rowDef struct {
	id, name, unit string
	target         string
	// met judges the row; nil when there is no target.
	met func(r *Row) bool
}

func ratioAtMost(x float64) func(r *Row) bool {
	return func(r *Row) bool { return r.Ratio != nil && *r.Ratio <= x }
}

func gantryBelow(x float64) func(r *Row) bool {
	return func(r *Row) bool { return r.Gantry != nil && r.Gantry.Median < x }
}

// rows is the table, in order.
var rows = []rowDef{
	{id: "cold/job", name: "1. cold: job, empty registry (build, run, tag, push)", unit: "s",
		target: "gantry/docker ≤ 1.0", met: ratioAtMost(1.0)},
	{id: "cold/job-fresh", name: "1. cold, as a fresh gantryd's first job (no layer kept compressed yet)", unit: "s",
		target: "gantry/docker ≤ 1.0", met: ratioAtMost(1.0)},
	{id: "cold/exit-to-tag", name: "1. cold: container exit → tag in registry", unit: "s", target: "report"},
	{id: "warm/job", name: "2. warm: job after a one-line change to app.py", unit: "s",
		target: "gantry/docker ≤ 1.0 (stretch ≤ 0.8)", met: ratioAtMost(1.0)},
	{id: "warm/run-alone", name: "2. warm: `docker run --rm` of the image gantry built (the training alone, the floor)", unit: "s", target: "report"},
	{id: "warm/overhead", name: "2. warm: gantry's overhead: its job (submit to `--wait` returning) − the image alone, per run", unit: "s",
		target: "≤ 0.1 s", met: gantryBelow(0.1000001)},
	{id: "warm/exit-to-tag", name: "2. warm: container exit → tag in registry", unit: "s", target: "report"},
	{id: "accuracy", name: "1.+2. accuracy the trainer printed", unit: "", target: "same on both sides",
		met: func(r *Row) bool {
			return r.Gantry != nil && r.Docker != nil && r.Gantry.Min == r.Docker.Min && r.Gantry.Max == r.Docker.Max
		}},
	{id: "repush/push", name: "3. re-push unchanged image: `gantry push` vs `docker push`", unit: "s",
		target: "≤ 2× docker and < 0.3 s", met: func(r *Row) bool { return ratioAtMost(2)(r) && gantryBelow(0.3)(r) }},
	{id: "repush/read", name: "3. re-push: bytes gantryd read (files, engine API and registry sockets)", unit: "MB",
		target: "no layer read from the engine (< 16 MB)", met: gantryBelow(16)},
	{id: "repush/written", name: "3. re-push: bytes gantryd wrote", unit: "MB", target: "report"},
	{id: "repush/cpu", name: "3. re-push: gantryd CPU time", unit: "s",
		target: "no layer compressed again (< 1 CPU-s)", met: gantryBelow(1)},
	{id: "large/first", name: "4. large: first push of a new model layer", unit: "s", target: "report"},
	{id: "large/changed", name: "4. large: push after a one-line change to app.py", unit: "s", target: "report"},
	{id: "large/first-read", name: "4. large: bytes gantryd read, first push", unit: "MB", target: "report"},
	{id: "large/changed-read", name: "4. large: bytes gantryd read, push after change", unit: "MB", target: "report"},
	{id: "api/submit-p99-cold", name: "5. submit latency p99, 50 clients, the first burst a fresh gantryd takes (burst 0, one per bench run)", unit: "ms", target: "report"},
	{id: "api/submit-p50", name: "5. submit latency p50, 50 clients (bursts 1..runs, after burst 0)", unit: "ms", target: "report"},
	{id: "api/submit-p99", name: "5. submit latency p99, 50 clients", unit: "ms", target: "< 50 ms", met: gantryBelow(50)},
	{id: "api/fsync-p50", name: "5. the disk's own fsync latency p50 (4 KiB write + fdatasync in gantryd's data dir, before each burst)", unit: "ms", target: "report"},
	{id: "api/fsync-p99", name: "5. the disk's own fsync latency p99 (the same)", unit: "ms", target: "report"},
	{id: "api/submit-rate", name: "5. submissions per second, 50 clients", unit: "/s", target: "report"},
	{id: "api/sse-p50", name: "5. state change → SSE client (`GET /v1/events`) seeing it, p50 (30 `true` jobs one after another)", unit: "ms", target: "report"},
	{id: "api/sse-p99", name: "5. state change → SSE client seeing it, p99", unit: "ms", target: "≤ 5 ms", met: gantryBelow(5.0000001)},
	{id: "api/ls-first", name: "5. `GET /v1/jobs?limit=50`, 100,000 records: first page", unit: "ms", target: "< 50 ms", met: gantryBelow(50)},
	{id: "api/ls-deep", name: "5. same, page 99,000 records deep (`before=`)", unit: "ms", target: "< 50 ms", met: gantryBelow(50)},
	{id: "api/ls-cli", name: "5. `gantry ls -n 50` (CLI process, end to end), 100,000 records", unit: "ms", target: "report"},
	{id: "api/ls-start", name: "5. gantryd start to first answer, 100,000 records", unit: "s", target: "report"},
	{id: "api/rss-idle", name: "5. gantryd RSS, idle after start", unit: "MiB", target: "< 40 MiB", met: gantryBelow(40)},
	{id: "api/rss-4jobs", name: "5. gantryd RSS, 4 jobs training", unit: "MiB", target: "report"},
	{id: "api/rss-100k", name: "5. gantryd RSS, 100,000 records, after the pages (mmapped data file included)", unit: "MiB", target: "report"},
	{id: "api/rss-100k-anon", name: "5. same, anonymous memory only (RssAnon: heap, stacks)", unit: "MiB", target: "report"},
	{id: "outputs/added", name: "6. outputs: time shipping the model adds, exit → tag (layer − none, per run)", unit: "ms",
		target: "< 100 ms", met: gantryBelow(100)},
	{id: "outputs/exit-to-tag-layer", name: "6. outputs: exit → tag, model shipped as a layer (--outputs=layer)", unit: "s", target: "report"},
	{id: "outputs/exit-to-tag-none", name: "6. outputs: exit → tag, --outputs=none", unit: "s", target: "report"},
	{id: "outputs/layer", name: "6. outputs: output layer uploaded (compressed)", unit: "KB",
		target: "one small layer", met: func(r *Row) bool { return r.Gantry != nil && r.Gantry.Max < 1024 }},
	{id: "outputs/job-layer", name: "6. outputs: job, model shipped as a layer", unit: "s", target: "report"},
	{id: "outputs/job-none", name: "6. outputs: job, --outputs=none", unit: "s", target: "report"},
	{id: "sweep/job", name: "7. sweep: 12 points of the Iris trainer, push the best (gantry sweep vs a docker CLI loop)", unit: "s", target: "report"},
	{id: "sweep/builds", name: "7. sweep: builds (gantry: BuildKit's cache record; docker: docker build runs)", unit: "",
		target: "gantry: one", met: func(r *Row) bool { return r.Gantry != nil && r.Gantry.Max == 1 }},
	{id: "sweep/one-run", name: "7. sweep: one warm training run (docker run --rm, one at a time)", unit: "s", target: "report"},
	{id: "sweep/over-bound", name: "7. sweep: gantry's time / (ceil(12 / max-jobs) × one warm run)", unit: "×",
		target: "≤ 1.25", met: gantryBelow(1.2500001)},
	{id: "scale/batch-1", name: "8. scale: 12 Iris jobs on a swarm, 1 worker (one job per node at a time)", unit: "s", target: "report"},
	{id: "scale/batch-3", name: "8. scale: the same 12 jobs on 3 workers", unit: "s", target: "report"},
	{id: "scale/speedup", name: "8. scale: throughput, 3 workers over 1", unit: "×",
		target: "≥ 2.5", met: func(r *Row) bool { return r.Gantry != nil && r.Gantry.Median >= 2.5 }},
	{id: "scale/job-swarm", name: "8. scale: one warm Iris job on the swarm (submit to --wait)", unit: "s", target: "report"},
	{id: "scale/job-local", name: "8. scale: the same job on the local engine", unit: "s", target: "report"},
	{id: "scale/overhead", name: "8. scale: the swarm's per-job overhead (swarm − local, per run)", unit: "s", target: "report"},
	{id: "soak/data-ref", name: "9. soak: data dir after the first cycle (job 100, or half the jobs)", unit: "MB", target: "report"},
	{id: "soak/data-last", name: "9. soak: data dir after the last job", unit: "MB", target: "report"},
	{id: "soak/data-growth", name: "9. soak: data dir, last over first cycle", unit: "×", target: "≤ 1.2 (flat)", met: gantryBelow(1.2000001)},
	{id: "soak/engine-ref", name: "9. soak: engine (gantry's job images + build cache) after the first cycle", unit: "MB", target: "report"},
	{id: "soak/engine-last", name: "9. soak: engine (gantry's job images + build cache) after the last job", unit: "MB", target: "report"},
	{id: "soak/engine-growth", name: "9. soak: engine, last over first cycle", unit: "×", target: "≤ 1.2 (flat)", met: gantryBelow(1.2000001)},
	{id: "soak/images-ref", name: "9. soak: the soak's job images in the engine after the first cycle (--retain-per-image 10, 2 jobs at a time)", unit: "", target: "report"},
	{id: "soak/images", name: "9. soak: the soak's job images in the engine after the last job", unit: "", target: "report"},
	{id: "soak/job", name: "9. soak: wall time per job (2 at a time, retention after each)", unit: "s", target: "report"},
}

// Stats are the samples of one side of a row.
type Stats struct {
	Samples []float64 `json:"samples"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
}

func newStats(v []float64) *Stats {
	if len(v) == 0 {
		return nil
	}
	return &Stats{Samples: v, Median: median(v), Min: slices.Min(v), Max: slices.Max(v)}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Row is one line of the table.
type Row struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Unit   string `json:"unit"`
	Gantry *Stats `json:"gantry,omitempty"`
	Docker *Stats `json:"docker,omitempty"`
	// Ratio is the median of gantry's samples over the median of docker's.
	Ratio *float64 `json:"ratio,omitempty"`
	// PairedRatios are gantry's sample over docker's, run by run (the two
	// sides of a run ran back to back).
	PairedRatios []float64 `json:"paired_ratios,omitempty"`
	Target       string    `json:"target"`
	Met          *bool     `json:"met,omitempty"`
}

type machine struct {
	NProc        int     `json:"nproc"`
	MemTotalGiB  float64 `json:"mem_total_gib"`
	Kernel       string  `json:"kernel"`
	Engine       string  `json:"engine"`
	DockerCLI    string  `json:"docker_cli"`
	DockerBuild  string  `json:"docker_build"`
	Registry     string  `json:"registry"`
	Go           string  `json:"go"`
	Gantry       string  `json:"gantry"`
	BaseImage    string  `json:"base_image"`
	BaseImageMB  float64 `json:"base_image_mb"`
	LoadAvgStart string  `json:"loadavg_start"`
	LoadAvgEnd   string  `json:"loadavg_end"`
}

type results struct {
	Machine     machine            `json:"machine"`
	Started     time.Time          `json:"started"`
	Finished    time.Time          `json:"finished"`
	Seconds     float64            `json:"seconds"`
	Runs        int                `json:"runs"`
	HeavyRuns   int                `json:"heavy_runs"`
	ModelMiB    int                `json:"model_mib"`
	Records     int                `json:"records"`
	Cases       []string           `json:"cases"`
	CaseSeconds map[string]float64 `json:"case_seconds"`
	Rows        []*Row             `json:"rows"`
	// Raw holds samples too many for the rows: each admission burst's
	// request latencies.
	Raw    map[string][]float64 `json:"raw,omitempty"`
	Errors []string             `json:"errors,omitempty"`

	samples map[string]map[string][]float64 // row ID → side → samples
}

func newResults(ctx context.Context, cfg config, started time.Time) *results {
	r := &results{
		Started: started.UTC(), Runs: cfg.runs, HeavyRuns: cfg.heavyRuns, ModelMiB: cfg.modelMB, Records: cfg.records, Cases: cfg.cases,
		CaseSeconds: map[string]float64{}, Raw: map[string][]float64{},
		samples: map[string]map[string][]float64{},
	}
	m := &r.Machine
	m.NProc = runtime.NumCPU()
	m.MemTotalGiB = memTotalGiB()
	m.Kernel = firstLine(readFile("/proc/sys/kernel/osrelease"))
	m.Engine = cmdLine(ctx, "docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})")
	m.DockerCLI = cmdLine(ctx, "docker", "version", "--format", "{{.Client.Version}}")
	m.DockerBuild = "BuildKit (buildx)"
	if _, err := runCmd(ctx, nil, "docker", "buildx", "version"); err != nil {
		m.DockerBuild = "legacy builder (no buildx plugin, as the docker CLI falls back to)"
	}
	m.Registry = cmdLine(ctx, "docker-registry", "--version")
	m.Go = goVersion()
	m.Gantry = cmdLine(ctx, "git", "describe", "--tags", "--always", "--dirty")
	m.BaseImage = cfg.base
	if out, err := runCmd(ctx, nil, "docker", "image", "inspect", "--format", "{{.Size}}", cfg.base); err == nil {
		var n float64
		fmt.Sscan(out, &n)
		m.BaseImageMB = n / 1e6
	}
	m.LoadAvgStart = loadAvg()
	return r
}

func (r *results) add(row, side string, v float64) {
	if r.samples[row] == nil {
		r.samples[row] = map[string][]float64{}
	}
	r.samples[row][side] = append(r.samples[row][side], v)
}

// build makes the rows from the samples.
func (r *results) build() {
	r.Rows = nil
	for _, def := range rows {
		s := r.samples[def.id]
		if s == nil {
			continue
		}
		// The names say 100,000 records, the default of -records.
		name := strings.NewReplacer("100,000", thousands(r.Records), "99,000", thousands(r.Records-max(r.Records/100, 50))).Replace(def.name)
		row := &Row{ID: def.id, Name: name, Unit: def.unit, Target: def.target,
			Gantry: newStats(s[gantrySide]), Docker: newStats(s[dockerSide])}
		if row.Gantry != nil && row.Docker != nil && row.Docker.Median != 0 && def.unit != "" {
			x := row.Gantry.Median / row.Docker.Median
			row.Ratio = &x
			for i := range min(len(row.Gantry.Samples), len(row.Docker.Samples)) {
				if d := row.Docker.Samples[i]; d != 0 {
					row.PairedRatios = append(row.PairedRatios, row.Gantry.Samples[i]/d)
				}
			}
		}
		if def.met != nil {
			ok := def.met(row)
			row.Met = &ok
		}
		r.Rows = append(r.Rows, row)
	}
}

// write writes results.json and results.md.
func (b *bench) write() error {
	r := b.res
	r.Finished = time.Now().UTC()
	r.Seconds = time.Since(b.started).Seconds()
	r.Machine.LoadAvgEnd = loadAvg()
	r.build()
	if err := os.MkdirAll(b.cfg.out, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.cfg.out, "results.md"), []byte(r.markdown()), 0o644)
}

func (r *results) markdown() string {
	var sb strings.Builder
	m := r.Machine
	fmt.Fprintf(&sb, "Measured %s, %s in all (runs: %d per case, %d for the cold and large cases; cases: %s).\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), time.Duration(r.Seconds*float64(time.Second)).Round(time.Second),
		r.Runs, r.HeavyRuns, strings.Join(r.Cases, ", "))
	fmt.Fprintf(&sb, "Machine: %d CPUs, %.0f GiB, Linux %s; Docker Engine %s, docker CLI %s, `docker build`: %s; %s; %s; gantry %s; base image %s (%.0f MB); large image: +%d MiB model layer. Load average (1, 5, 15 min) at start %s, at end %s.\n\n",
		m.NProc, m.MemTotalGiB, m.Kernel, m.Engine, m.DockerCLI, m.DockerBuild, m.Registry, m.Go, m.Gantry,
		m.BaseImage, m.BaseImageMB, r.ModelMiB, m.LoadAvgStart, m.LoadAvgEnd)
	sb.WriteString("| case | n | gantry median [min–max] | docker median [min–max] | gantry/docker [per-run range] | target | met? |\n")
	sb.WriteString("|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		n := 0
		if row.Gantry != nil {
			n = len(row.Gantry.Samples)
		}
		ratio := "—"
		if row.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *row.Ratio)
			if len(row.PairedRatios) > 1 {
				ratio += fmt.Sprintf(" [%.2f–%.2f]", slices.Min(row.PairedRatios), slices.Max(row.PairedRatios))
			}
		}
		met := "—"
		if row.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*row.Met]
		}
		fmt.Fprintf(&sb, "| %s | %d | %s | %s | %s | %s | %s |\n", row.Name, n,
			fmtStats(row.Gantry, row.Unit), fmtStats(row.Docker, row.Unit), ratio, row.Target, met)
	}
	if len(r.Errors) > 0 {
		sb.WriteString("\nErrors:\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&sb, "- %s\n", firstLine(e))
		}
	}
	return sb.String()
}

func fmtStats(s *Stats, unit string) string {
	if s == nil {
		return "—"
	}
	u := unit
	if u != "" && u != "/s" {
		u = " " + u
	}
	if len(s.Samples) == 1 {
		return fmtNum(s.Median) + u
	}
	return fmt.Sprintf("%s%s [%s–%s]", fmtNum(s.Median), u, fmtNum(s.Min), fmtNum(s.Max))
}

func fmtNum(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// thousands formats n with commas: 100,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func cmdLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return firstLine(string(out))
}

func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func memTotalGiB() float64 {
	for _, line := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb float64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb / (1 << 20)
		}
	}
	return 0
}
