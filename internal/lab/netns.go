package lab

import (
	"bufio"
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

	"golang.org/x/sys/unix"
)

// The lab's network: one /24 on a bridge that lives in a namespace of its
// own (with the bridge in the host namespace, joins time out: the host's
// dockerd sets the forward policy to drop). The host reaches it through a
// veth of its own, without forwarding.
const (
	subnetPrefix = "10.77.0."
	bridgeAddr   = subnetPrefix + "1"
	hostAddr     = subnetPrefix + "254"
	registryAddr = bridgeAddr + ":5000"

	// namePrefix starts every namespace and link a lab creates, so that the
	// leftovers of a crashed run can be told apart and removed.
	namePrefix = "glab"
	// runRoot holds each run's sockets, exec roots and configuration.
	// (buildkitd's lab keeps its own paths: this one is the swarm's alone.)
	runRoot = "/run/gantry-lab-swarm"
)

// nodeAddr is node i's address on the bridge.
func nodeAddr(i int) string { return subnetPrefix + strconv.Itoa(11+i) }

// netNames are the names of one run's namespaces and links.
type netNames struct{ run string }

func (n netNames) bridgeNS() string      { return namePrefix + n.run + "br" }
func (n netNames) nodeNS(i int) string   { return fmt.Sprintf("%s%sn%d", namePrefix, n.run, i) }
func (n netNames) nodeLink(i int) string { return fmt.Sprintf("%s%sn%d", namePrefix, n.run, i) }
func (n netNames) bridgeLink(i int) string {
	return fmt.Sprintf("%s%sn%db", namePrefix, n.run, i)
}
func (n netNames) hostLink() string     { return namePrefix + n.run + "h" }
func (n netNames) hostPeer() string     { return namePrefix + n.run + "hb" }
func nsPath(ns string) string           { return "/run/netns/" + ns }
func (n netNames) runDir() string       { return filepath.Join(runRoot, n.run) }
func (n netNames) nodeDir(i int) string { return filepath.Join(n.runDir(), "n"+strconv.Itoa(i)) }
func (n netNames) nodeSocket(i int) string {
	return filepath.Join(n.runDir(), fmt.Sprintf("n%d.sock", i))
}

// ip runs the ip command; its output is in the error when it fails.
func ip(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipBatch runs several ip commands in turn, stopping at the first failure.
func ipBatch(ctx context.Context, cmds [][]string) error {
	for _, c := range cmds {
		if err := ip(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

// setupBridge creates the bridge namespace with the bridge at bridgeAddr and
// the host's veth into it at hostAddr.
func setupBridge(ctx context.Context, n netNames) error {
	br := n.bridgeNS()
	return ipBatch(ctx, [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", "br0", "type", "bridge"},
		{"-n", br, "addr", "add", bridgeAddr + "/24", "dev", "br0"},
		{"-n", br, "link", "set", "br0", "up"},
		{"link", "add", n.hostLink(), "type", "veth", "peer", "name", n.hostPeer(), "netns", br},
		{"-n", br, "link", "set", n.hostPeer(), "master", "br0", "up"},
		{"addr", "add", hostAddr + "/24", "dev", n.hostLink()},
		{"link", "set", n.hostLink(), "up"},
	})
}

// setupNode creates node i's namespace, with a veth whose other end is on
// the bridge.
func setupNode(ctx context.Context, n netNames, i int) error {
	ns, br := n.nodeNS(i), n.bridgeNS()
	return ipBatch(ctx, [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"link", "add", n.nodeLink(i), "netns", ns, "type", "veth", "peer", "name", n.bridgeLink(i), "netns", br},
		{"-n", br, "link", "set", n.bridgeLink(i), "master", "br0", "up"},
		{"-n", ns, "addr", "add", nodeAddr(i) + "/24", "dev", n.nodeLink(i)},
		{"-n", ns, "link", "set", n.nodeLink(i), "up"},
	})
}

// cleanNetwork removes every namespace and host link whose name starts with
// namePrefix, after killing the processes still inside those namespaces,
// and unmounts whatever is left mounted under the run and cache roots. It
// is the whole of what a lab leaves behind if its process dies, so it also
// serves Close.
func cleanNetwork(ctx context.Context, only string) error {
	var errs []error
	nss, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range nss {
		if !strings.HasPrefix(e.Name(), namePrefix+only) {
			continue
		}
		killNamespace(ctx, e.Name())
		if err := ip(ctx, "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range links {
		if strings.HasPrefix(e.Name(), namePrefix+only) {
			// Deleting one end of a veth deletes the other, and the kernel
			// does it after the namespace's deletion returned: a failure
			// counts only if the link is still there.
			err := ip(ctx, "link", "del", e.Name())
			if _, serr := os.Stat(filepath.Join("/sys/class/net", e.Name())); err != nil && serr == nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// killNamespace kills the processes inside network namespace ns (a crashed
// run's dockerd, containerd, shims and registry) and waits until they are
// gone.
func killNamespace(ctx context.Context, ns string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
		if waitGone(ctx, pids, 20*time.Second) {
			return
		}
	}
}

// waitGone polls until none of pids is alive (processes not our children
// offer no other signal), up to limit.
func waitGone(ctx context.Context, pids []int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		alive := false
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil && !zombie(pid) {
				alive = true
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// zombie reports whether pid has exited and waits only to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// unmountUnder detaches every mount whose path starts with one of
// prefixes, deepest first.
func unmountUnder(prefixes ...string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		for _, r := range prefixes {
			if strings.HasPrefix(p, r) {
				points = append(points, p)
			}
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
