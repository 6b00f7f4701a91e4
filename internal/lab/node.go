package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
)

// dockerdPath is Debian's engine, the one ENVIRONMENT.md measured.
const dockerdPath = "/usr/sbin/dockerd"

// process is a daemon the lab started, with a channel closed when it exits.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// start runs cmd with its output in logPath and watches for its exit.
func start(name string, cmd *exec.Cmd, logPath string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C at the test's terminal must not stop
	// the lab's daemons before Close does.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM and waits for the exit, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("%s did not stop in %s: killed", p.name, grace)
}

// logTail is the end of the process's log, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// startDockerd starts node i's dockerd inside the node's network namespace
// and a UTS namespace of its own (so each node has its own hostname), with
// a data root kept across runs and everything else in the run directory.
func startDockerd(n netNames, i int, dataRoot string, o SwarmOptions) (*process, error) {
	dir := n.nodeDir(i)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	args := []string{
		"--config-file", cfg,
		"--data-root", dataRoot,
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", "unix://" + n.nodeSocket(i),
		"--insecure-registry", registryAddr,
		"--log-driver", "json-file",
	}
	if o.GPUNode > 0 && o.GPUNode == i {
		args = append(args, "--node-generic-resource", "gpu="+strconv.Itoa(o.GPUs))
	}
	// nsenter, not `ip netns exec`: the latter remounts /sys and hides the
	// cgroup mounts, and dockerd dies with "Devices cgroup isn't mounted".
	script := `hostname "$0" && exec nsenter --net="$1" "$2" "${@:3}"`
	cmdArgs := append([]string{"-c", script, nodeHostname(i), nsPath(n.nodeNS(i)), dockerdPath}, args...)
	cmd := exec.Command("/bin/bash", cmdArgs...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUTS}
	return start(fmt.Sprintf("dockerd of node %d", i), cmd, filepath.Join(dir, "dockerd.log"))
}

// nodeHostname is node i's hostname (its Description.Hostname in the swarm).
func nodeHostname(i int) string { return "lab-n" + strconv.Itoa(i) }

// dial returns a client of the engine at host, negotiating the API version
// as runner does (Debian's 20.10 refuses anything above 1.41).
func dial(host string) (*client.Client, error) {
	c, err := client.New(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", host, err)
	}
	return c, nil
}

// waitEngine waits until the engine behind c answers a ping, failing early
// when p exits; an engine offers no signal of readiness but its socket.
func waitEngine(ctx context.Context, c *client.Client, p *process, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true})
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return gantry.Errorf(gantry.ErrUnavailable, "%s exited while starting: %s", p.name, p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not answering after %s: %w (%v): %s", p.name, limit, gantry.ErrUnavailable, err, p.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// resetDataRoot removes the swarm and network state a cached data root kept
// from an earlier run, so that the node forms a fresh swarm; its images stay.
func resetDataRoot(dataRoot string) error {
	if err := os.MkdirAll(dataRoot, 0o711); err != nil {
		return err
	}
	var errs []error
	for _, d := range []string{"swarm", "network"} {
		if err := os.RemoveAll(filepath.Join(dataRoot, d)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
