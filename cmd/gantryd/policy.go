package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/registry"
)

// listFlag is a flag that may be given many times ("--allow-cap A --allow-cap
// B"); a comma-separated value counts as several.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// sizeFlag is a size in bytes, given as docker run --memory takes it.
type sizeFlag int64

func (s *sizeFlag) String() string {
	if *s == 0 {
		return "0"
	}
	return gantry.FormatBytes(int64(*s))
}

func (s *sizeFlag) Set(v string) error {
	n, err := gantry.ParseBytes(v)
	*s = sizeFlag(n)
	return err
}

// policyFlags are the flags that make up the operator's policy: what a job
// may ask of gantryd (see gantry.Policy).
type policyFlags struct {
	memory, maxLog, context, queuedBytes sizeFlag
	maxOutput                            sizeFlag
	cpus                                 float64
	pids                                 int64
	build, train, push                   time.Duration
	queue                                int
	caps, networks, datasetRoots         listFlag
	insecure                             registry.Registries
	hostRoot, privateFetch, gpus         bool
}

// register adds the policy's flags to fs, with today's defaults.
func (p *policyFlags) register(fs *flag.FlagSet) {
	p.maxLog, p.context, p.queuedBytes, p.maxOutput = 256<<20, 512<<20, 8<<30, 1<<30
	fs.Var(&p.memory, "memory", "memory limit of training containers, e.g. 2g: the most a job may ask, and what a job that asks nothing gets (empty or 0: none)")
	fs.Float64Var(&p.cpus, "cpus", 0, "CPU limit of training containers: a job's ceiling and default (0: none)")
	fs.Int64Var(&p.pids, "pids-limit", 1024, "process limit of training containers: a job's ceiling and default (0: none)")
	fs.Var(&p.maxLog, "max-log", "training output kept of a job, in gantry's log and in the engine's log of its container: a job's ceiling and default")
	fs.DurationVar(&p.build, "build-timeout", 30*time.Minute, "limit on a job's build: its ceiling and default (0: none)")
	fs.DurationVar(&p.train, "train-timeout", 2*time.Hour, "limit on a job's training: its ceiling and default (0: none)")
	fs.DurationVar(&p.push, "push-timeout", 30*time.Minute, "limit on a job's push, retries included: its ceiling and default (0: none)")
	fs.Var(&p.maxOutput, "max-output", "outputs kept of a job (what its training writes to its output directory): a job's ceiling and default")
	fs.Var(&p.datasetRoots, "dataset-root", "a host directory under which jobs may mount datasets with --dataset (repeatable; none by default: only named volumes)")
	fs.BoolVar(&p.gpus, "allow-gpus", false, "let jobs ask for GPUs with --gpus")
	fs.Var(&p.context, "max-context-size", "largest build context accepted")
	fs.IntVar(&p.queue, "max-queue", 100, "jobs that may wait for a slot; a submission beyond is answered 429 (0: no bound)")
	fs.Var(&p.queuedBytes, "max-queued-bytes", "build contexts the waiting jobs may hold on disk in all; a submission beyond is answered 429 (0: no bound)")
	fs.Var(&p.caps, "allow-cap", "a capability jobs may keep with --cap-add (repeatable; none by default); those that give root on the host also need --allow-host-root")
	fs.Var(&p.networks, "allow-network", "a Docker network jobs may join with --network (repeatable; none by default); host also needs --allow-host-root")
	fs.BoolVar(&p.hostRoot, "allow-host-root", false, "THIS GIVES ROOT ON THE HOST to whoever may submit a job: lets --allow-cap list SYS_ADMIN, DAC_READ_SEARCH, NET_RAW and their kin, and --allow-network list host")
	fs.Var(&p.insecure, "insecure-registry", "registry (HOST[:PORT]) that may be spoken to over plain HTTP, besides loopback ones (repeatable)")
	fs.BoolVar(&p.privateFetch, "build-allow-private", false, "let a build's ADD fetch from private network addresses (10/8, 172.16/12, 192.168/16, fc00::/7); loopback and link-local stay refused")
}

// policy returns the policy the flags say, checked.
func (p *policyFlags) policy() (gantry.Policy, error) {
	pol := gantry.Policy{
		Resources: gantry.Resources{Memory: int64(p.memory), CPUs: p.cpus, PidsLimit: p.pids,
			LogBytes: int64(p.maxLog), OutputBytes: int64(p.maxOutput)},
		Timeouts: gantry.Timeouts{
			Build: gantry.Duration(p.build), Train: gantry.Duration(p.train), Push: gantry.Duration(p.push),
		},
		ContextBytes:       int64(p.context),
		ContextEntries:     100000,
		MaxQueue:           p.queue,
		MaxQueuedBytes:     int64(p.queuedBytes),
		CapAdd:             append([]string(nil), p.caps...),
		Networks:           append([]string(nil), p.networks...),
		HostRoot:           p.hostRoot,
		BuildPrivateFetch:  p.privateFetch,
		InsecureRegistries: append([]string(nil), p.insecure...),
		DatasetRoots:       append([]string(nil), p.datasetRoots...),
		GPUs:               p.gpus,
	}
	if p.maxLog <= 0 {
		return pol, fmt.Errorf("--max-log %d: gantryd keeps some of a job's output; give a size like 64m", p.maxLog)
	}
	if p.maxOutput <= 0 {
		return pol, fmt.Errorf("--max-output %d: give a size like 1g", p.maxOutput)
	}
	if p.context <= 0 {
		return pol, fmt.Errorf("--max-context-size %d: give a size like 512m", p.context)
	}
	return pol, pol.Check()
}
