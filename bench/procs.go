package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
	"github.com/gantry-ml/gantry/internal/lab"
	"github.com/gantry-ml/gantry/store"
)

// proc is a long-running child: a gantryd or a registry.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // where its output goes
	done chan struct{}
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a ^C to the benchmark reaches it only
	// through stop, which first cancels its jobs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits, then SIGKILL.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	return tail(string(b), 1500)
}

// daemon is a gantryd of the benchmark's, with its own socket and data dir.
type daemon struct {
	*proc
	socket  string
	dataDir string
	tmp     string // gantryd's TMPDIR
	bin     string
	client  *api.Client
}

// startDaemon starts a gantryd named name on dataDir ("" for a fresh one)
// with extra flags, and waits until it answers.
func (b *bench) startDaemon(ctx context.Context, name, dataDir string, args ...string) (*daemon, error) {
	if dataDir == "" {
		dataDir = filepath.Join(b.work, "data-"+name)
	}
	socket := filepath.Join(b.work, name+".sock")
	// A TMPDIR of its own, so that nothing a gantryd writes there outlives
	// the benchmark (see sweepTmp).
	tmp := filepath.Join(b.work, "tmp-"+name)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	args = append([]string{"--socket", socket, "--data-dir", dataDir}, args...)
	if b.cfg.debug {
		args = append(args, "--debug")
	}
	p, err := startProc("gantryd "+name, filepath.Join(b.work, "gantryd-"+name+".log"), []string{"TMPDIR=" + tmp}, filepath.Join(b.bin, "gantryd"), args...)
	if err != nil {
		return nil, err
	}
	cl, err := api.NewClient("unix://" + socket)
	if err != nil {
		p.stop()
		return nil, err
	}
	d := &daemon{proc: p, socket: socket, dataDir: dataDir, tmp: tmp, bin: b.bin, client: cl}
	deadline := time.Now().Add(60 * time.Second)
	for {
		vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Version(vctx)
		cancel()
		if err == nil {
			break
		}
		if p.exited() {
			return nil, fmt.Errorf("gantryd %s exited at start:\n%s", name, p.logTail())
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("gantryd %s did not answer within 60s: %v\n%s", name, err, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d, nil
}

// gantry runs the CLI against d. When it fails because gantryd has gone,
// the error says so, with the end of gantryd's log.
func (d *daemon) gantry(ctx context.Context, args ...string) (string, error) {
	out, err := runCmd(ctx, []string{"GANTRY_HOST=unix://" + d.socket}, filepath.Join(d.bin, "gantry"), args...)
	if err != nil && d.exited() {
		err = fmt.Errorf("%w\ngantryd %s exited (%v); its log ends:\n%s", err, d.name, d.cmd.ProcessState, d.logTail())
	}
	return out, err
}

// sweepTmp removes image files a push left in gantryd's TMPDIR. Before
// b5f4364 gantryd buffered each push's docker save stream there with
// go-containerregistry's file-buffered opener, which removes its ~1 GB file
// only when the garbage collector gets to it (never, when gantryd stops
// first); gantryd now buffers under its data dir and removes the file after
// the push, so this finds nothing unless an older gantryd is measured. Call
// it only when no push is under way.
func (d *daemon) sweepTmp() {
	files, _ := filepath.Glob(filepath.Join(d.tmp, "go-containerregistry-*.tar"))
	for _, f := range files {
		os.Remove(f)
	}
}

// stop cancels the jobs d has under way (a clean stop would leave their
// containers running for the next gantryd), stops d, and removes any
// container that still carries its instance label.
func (d *daemon) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if !d.exited() {
		active := []gantry.State{gantry.StateQueued, gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing}
		for {
			jobs, _, err := d.client.List(ctx, gantry.JobFilter{Limit: 1000, States: active})
			if err != nil || len(jobs) == 0 {
				break
			}
			cancelAll(ctx, d.client, ids(jobs))
			if ctx.Err() != nil {
				break
			}
		}
	}
	d.proc.stop()
	st, err := store.Open(filepath.Join(d.dataDir, "gantry.db"))
	if err != nil {
		return
	}
	inst, err := st.Instance()
	st.Close()
	if err != nil {
		return
	}
	out, _ := runCmd(ctx, nil, "docker", "ps", "-aq", "--filter", "label=io.gantry.daemon="+inst)
	if ids := strings.Fields(out); len(ids) > 0 {
		runQuiet("docker", append([]string{"rm", "-f"}, ids...)...)
	}
}

func ids(jobs []*gantry.Job) []string {
	s := make([]string, len(jobs))
	for i, j := range jobs {
		s[i] = j.ID
	}
	return s
}

// cancelAll cancels the jobs, a few at a time, and waits until each has
// ended.
func cancelAll(ctx context.Context, cl *api.Client, ids []string) error {
	work := make(chan string)
	errs := make(chan error, len(ids))
	const workers = 8
	for range workers {
		go func() {
			for id := range work {
				errs <- cancelOne(ctx, cl, id)
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	var first error
	for range ids {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func cancelOne(ctx context.Context, cl *api.Client, id string) error {
	j, err := cl.Cancel(ctx, id)
	if err != nil && !errors.Is(err, gantry.ErrConflict) {
		return err
	}
	if j != nil && j.State.Terminal() {
		return nil
	}
	_, err = waitState(ctx, cl, id, 2*time.Minute, func(s gantry.State) bool { return s.Terminal() })
	return err
}

// waitState polls job id until its state satisfies ok.
func waitState(ctx context.Context, cl *api.Client, id string, within time.Duration, ok func(gantry.State) bool) (*gantry.Job, error) {
	deadline := time.Now().Add(within)
	for {
		j, err := cl.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if ok(j.State) {
			return j, nil
		}
		if j.State.Terminal() {
			return j, fmt.Errorf("job %s ended %s: %s", id, j.State, j.Error)
		}
		if time.Now().After(deadline) {
			return j, fmt.Errorf("job %s still %s after %v", id, j.State, within)
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// procStat is what /proc says of a process: resident memory, bytes read
// and written through read(2), write(2) and friends (sockets included), and
// CPU time.
type procStat struct {
	rssBytes   int64
	anonBytes  int64 // the part of rssBytes that is not file pages (bbolt's mmapped data file is)
	readBytes  int64 // rchar
	writeBytes int64 // wchar
	cpu        time.Duration
}

func (d *daemon) stat() (procStat, error) {
	return readProcStat(d.cmd.Process.Pid)
}

func readProcStat(pid int) (procStat, error) {
	var s procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		key, v, _ := strings.Cut(line, ":")
		var field *int64
		switch key {
		case "VmRSS":
			field = &s.rssBytes
		case "RssAnon":
			field = &s.anonBytes
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return s, fmt.Errorf("%s %q: %v", key, v, err)
		}
		*field = kb << 10
	}
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar:"); ok {
			s.readBytes, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "wchar:"); ok {
			s.writeBytes, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are fields 14 and 15 of the whole line.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	s.cpu = time.Duration(utime+stime) * time.Second / clkTck
	return s, nil
}

// registry is a private docker-registry with its own storage, so that a
// case can start from an empty one.
type registry struct {
	*lab.LocalRegistry
	addr string
	dir  string
}

// startRegistry starts Debian's docker-registry on a free loopback port with
// filesystem storage under the scratch directory.
func (b *bench) startRegistry(ctx context.Context, name string) (*registry, error) {
	dir := filepath.Join(b.work, "registry-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r, err := lab.StartLocalRegistry(ctx, dir, "", http.StatusOK)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("registry %s: %w", name, err)
	}
	return &registry{LocalRegistry: r, addr: r.Addr, dir: dir}, nil
}

// stop stops the registry and removes what it stored.
func (r *registry) stop() {
	r.Close()
	os.RemoveAll(r.dir)
}
