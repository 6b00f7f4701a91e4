package gantry

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Policy is the operator's bound on what a job may ask: the one place that
// says it. gantryd's flags set it, every submission is checked against it,
// and gantry info shows it. The numbers are ceilings and, for a job that
// asks nothing, the defaults: a job may lower any of them, never raise one.
// Zero means no ceiling.
type Policy struct {
	// Backend is where training runs: BackendLocal ("" too) or
	// BackendSwarm.
	Backend string `json:"backend,omitempty"`
	// Resources bound the training container (and LogBytes its log).
	Resources Resources `json:"resources"`
	// Timeouts bound each phase.
	Timeouts Timeouts `json:"timeouts"`
	// ContextBytes and ContextEntries bound a submitted build context.
	ContextBytes   int64 `json:"context_bytes"`
	ContextEntries int   `json:"context_entries"`
	// MaxQueue bounds the jobs waiting for a slot, and MaxQueuedBytes the
	// build contexts they hold on disk; a submission beyond either is
	// answered "too many" (HTTP 429).
	MaxQueue       int   `json:"max_queue"`
	MaxQueuedBytes int64 `json:"max_queued_bytes"`
	// CapAdd lists the capabilities a job may keep; none by default.
	CapAdd []string `json:"cap_add"`
	// Networks lists the networks a job may join; none by default, and
	// "none" (no network at all) is always allowed.
	Networks []string `json:"networks"`
	// HostRoot allows what hands a job root on the host: the capabilities RootCapability
	// names and the host network. Off unless the operator says
	// --allow-host-root.
	HostRoot bool `json:"host_root"`
	// BuildPrivateFetch lets a build's ADD fetch from private (RFC 1918,
	// ULA) addresses; loopback and link-local are refused whatever it says.
	BuildPrivateFetch bool `json:"build_private_fetch"`
	// InsecureRegistries are the registries besides loopback that gantryd
	// speaks plain HTTP to.
	InsecureRegistries []string `json:"insecure_registries,omitempty"`
	// DatasetRoots are the host directories under which a job may mount a
	// dataset; none by default (named volumes are always allowed).
	DatasetRoots []string `json:"dataset_roots"`
	// GPUs lets jobs ask for GPUs (--gpus); off by default.
	GPUs bool `json:"gpus"`
	// Webhooks says whether gantryd sends webhooks (it has a secret to sign
	// them with); WebhookPrivate lets a job's webhook URLs reach loopback
	// and private addresses (--webhook-allow-private).
	Webhooks       bool `json:"webhooks"`
	WebhookPrivate bool `json:"webhook_private"`
}

// The flags that set each part of the policy, named in every refusal so
// that a user can tell the operator what to change.
const (
	FlagAllowCap      = "--allow-cap"
	FlagAllowNetwork  = "--allow-network"
	FlagAllowHostRoot = "--allow-host-root"
	FlagDatasetRoot   = "--dataset-root"
	FlagAllowGPUs     = "--allow-gpus"
)

// Capabilities lists the Linux capabilities by the names Docker takes
// (without CAP_).
var Capabilities = []string{
	"AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF",
	"CHECKPOINT_RESTORE", "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER",
	"FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE", "LINUX_IMMUTABLE",
	"MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
	"SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE",
	"SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE",
	"SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
}

// containedCapabilities are the capabilities whose power stays inside the
// container when nothing of the host is mounted: the ones Docker grants by
// default, less DAC_OVERRIDE and NET_RAW, plus IPC_LOCK (memory stays under
// the cgroup's limit). Every other capability reaches the host (a kernel
// interface, another process, the network stack, or a file the container
// should not read): see RootCapability.
var containedCapabilities = []string{
	"AUDIT_WRITE", "CHOWN", "FOWNER", "FSETID", "IPC_LOCK", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

// RootCapability reports whether capability c (a name from Capabilities)
// can hand a container root on the host, or reach past its sandbox: on this
// engine, SYS_ADMIN with DAC_OVERRIDE runs a command as root on the host
// through cgroup v1's release_agent, DAC_READ_SEARCH alone reads any host
// file, and NET_RAW sniffs what the host's other containers send.
func RootCapability(c string) bool {
	return !slices.Contains(containedCapabilities, c)
}

// NormalizeCapability returns c as Docker names it ("net_bind_service" and
// "CAP_NET_BIND_SERVICE" are NET_BIND_SERVICE). It returns ErrInvalid for a
// name that is not a capability, and for ALL.
func NormalizeCapability(c string) (string, error) {
	n := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
	if !slices.Contains(Capabilities, n) {
		return "", Errorf(ErrInvalid, "capability %q: name one Linux capability, like NET_BIND_SERVICE", c)
	}
	return n, nil
}

// Check reports whether the policy itself is sound, as gantryd starts: every
// capability named exists, and what hands out root is listed only with
// HostRoot. It normalizes the capability names. It returns ErrInvalid.
func (p *Policy) Check() error {
	for i, c := range p.CapAdd {
		n, err := NormalizeCapability(c)
		if err != nil {
			return fmt.Errorf("%s: %w", FlagAllowCap, err)
		}
		if RootCapability(n) && !p.HostRoot {
			return Errorf(ErrInvalid, "%s %s: this capability gives a job root on the host (or reaches past its sandbox); add %s to allow it anyway", FlagAllowCap, n, FlagAllowHostRoot)
		}
		p.CapAdd[i] = n
	}
	for _, n := range p.Networks {
		if n == "" || !validName(n) {
			return Errorf(ErrInvalid, "%s %q: want a Docker network name", FlagAllowNetwork, n)
		}
		if n == "host" && !p.HostRoot {
			return Errorf(ErrInvalid, "%s host: the host network reaches every service on the host's loopback; add %s to allow it anyway", FlagAllowNetwork, FlagAllowHostRoot)
		}
	}
	for _, root := range p.DatasetRoots {
		if !absClean(root) || root == "/" {
			return Errorf(ErrInvalid, "%s %q: want an absolute, clean path other than /", FlagDatasetRoot, root)
		}
	}
	if p.MaxQueue < 0 || p.MaxQueuedBytes < 0 || p.ContextBytes < 0 || p.ContextEntries < 0 {
		return Errorf(ErrInvalid, "policy limits must not be negative")
	}
	spec := Spec{Timeouts: p.Timeouts, Resources: p.Resources}
	return spec.Validate()
}

// Apply checks spec against the policy and fills what it leaves at zero with
// the policy's defaults, so the record shows what applies. It returns
// ErrForbidden, naming the flag of the policy that refuses, for a request
// beyond it; spec is unchanged then.
func (p *Policy) Apply(spec *Spec) error {
	sb := spec.Sandbox
	for _, c := range sb.CapAdd {
		if !slices.Contains(p.CapAdd, c) {
			return p.refuseCap(c)
		}
	}
	if n := sb.Network; n != "" && n != "none" && !slices.Contains(p.Networks, n) {
		return Errorf(ErrForbidden, "network %q: gantryd's policy lets jobs join %s; the operator allows a network with %s NAME", n, orNone(p.Networks), FlagAllowNetwork)
	}
	if err := p.applyBackend(spec); err != nil {
		return err
	}
	if spec.Run.GPUs != "" && !p.GPUs {
		return Errorf(ErrForbidden, "gpus %s: gantryd's policy gives jobs no GPUs; the operator allows them with %s", spec.Run.GPUs, FlagAllowGPUs)
	}
	for _, d := range spec.Run.Datasets {
		if !d.Volume() && len(p.DatasetRoots) == 0 {
			return Errorf(ErrForbidden, "dataset %s: gantryd's policy allows no host paths (only named volumes); the operator allows a directory with %s DIR", d.Source, FlagDatasetRoot)
		}
	}
	r, t := spec.Resources, spec.Timeouts
	for _, c := range []struct {
		what, flag string
		got, max   float64
		show       func(float64) string
	}{
		{"memory", "--memory", float64(r.Memory), float64(p.Resources.Memory), showBytes},
		{"cpus", "--cpus", r.CPUs, p.Resources.CPUs, showNumber},
		{"pids limit", "--pids-limit", float64(r.PidsLimit), float64(p.Resources.PidsLimit), showNumber},
		{"log limit", "--max-log", float64(r.LogBytes), float64(p.Resources.LogBytes), showBytes},
		{"output limit", "--max-output", float64(r.OutputBytes), float64(p.Resources.OutputBytes), showBytes},
		{"build timeout", "--build-timeout", float64(t.Build), float64(p.Timeouts.Build), showDuration},
		{"train timeout", "--train-timeout", float64(t.Train), float64(p.Timeouts.Train), showDuration},
		{"push timeout", "--push-timeout", float64(t.Push), float64(p.Timeouts.Push), showDuration},
	} {
		if c.max > 0 && c.got > c.max {
			return Errorf(ErrForbidden, "%s %s: over gantryd's ceiling of %s (the operator sets it with %s; ask for less, or leave it out to get the ceiling)",
				c.what, c.show(c.got), c.show(c.max), c.flag)
		}
	}
	fill(&spec.Timeouts.Build, p.Timeouts.Build)
	fill(&spec.Timeouts.Train, p.Timeouts.Train)
	fill(&spec.Timeouts.Push, p.Timeouts.Push)
	fill(&spec.Resources.Memory, p.Resources.Memory)
	fill(&spec.Resources.CPUs, p.Resources.CPUs)
	fill(&spec.Resources.PidsLimit, p.Resources.PidsLimit)
	fill(&spec.Resources.LogBytes, p.Resources.LogBytes)
	fill(&spec.Resources.OutputBytes, p.Resources.OutputBytes)
	return nil
}

func (p *Policy) refuseCap(c string) error {
	if RootCapability(c) {
		return Errorf(ErrForbidden, "capability %s: it gives a job root on the host (or reaches past its sandbox), and gantryd's policy does not allow it (the operator would need %s %s and %s)", c, FlagAllowCap, c, FlagAllowHostRoot)
	}
	return Errorf(ErrForbidden, "capability %s: gantryd's policy lets jobs keep %s; the operator allows one with %s %s", c, orNone(p.CapAdd), FlagAllowCap, c)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func fill[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func showBytes(v float64) string    { return FormatBytes(int64(v)) }
func showNumber(v float64) string   { return fmt.Sprintf("%g", v) }
func showDuration(v float64) string { return time.Duration(v).String() }

// FormatBytes writes n the way ParseBytes reads it back: "2g", "512m",
// "1.5k", "100b".
func FormatBytes(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if n >= u.size {
			return fmt.Sprintf("%g%s", float64(n)/float64(u.size), u.unit)
		}
	}
	return fmt.Sprintf("%db", n)
}
