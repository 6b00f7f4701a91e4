package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gantry-ml/gantry"
)

// diffRun says, through line, how what two jobs' training was given
// differs: the command, the environment (secrets by name only), the
// datasets (by the digest each was pinned by), GPUs and /dev/shm.
func diffRun(line func(format string, args ...any), a, b *gantry.Job) {
	ra, rb := a.Spec.Run, b.Spec.Run
	if !slices.Equal(ra.Cmd, rb.Cmd) {
		line("command: %s -> %s", cmdText(ra.Cmd), cmdText(rb.Cmd))
	}
	ea, eb := envMap(ra.Env), envMap(rb.Env)
	for _, k := range unionKeys(ea, eb) {
		va, oka := ea[k]
		vb, okb := eb[k]
		switch {
		case oka && okb && va == vb:
		case !oka:
			line("env: + %s=%s", k, vb)
		case !okb:
			line("env: - %s=%s", k, va)
		default:
			line("env: ~ %s: %s -> %s", k, va, vb)
		}
	}
	if !slices.Equal(ra.SecretEnv, rb.SecretEnv) {
		line("secret env: %s -> %s", orNone(strings.Join(ra.SecretEnv, ",")), orNone(strings.Join(rb.SecretEnv, ",")))
	}
	pa, pb := pinMap(a), pinMap(b)
	for _, dst := range unionKeys(pa, pb) {
		if pa[dst] != pb[dst] {
			line("dataset %s: %s -> %s", dst, orNone(pa[dst]), orNone(pb[dst]))
		}
	}
	if ra.GPUs != rb.GPUs {
		line("gpus: %s -> %s", orNone(ra.GPUs), orNone(rb.GPUs))
	}
	if ra.ShmSize != rb.ShmSize {
		line("shm size: %s -> %s", shmText(ra.ShmSize), shmText(rb.ShmSize))
	}
}

func cmdText(cmd []string) string {
	if len(cmd) == 0 {
		return "(the image's)"
	}
	return fmt.Sprintf("%q", cmd)
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// pinMap is each dataset of j, by where it is mounted, as its source and
// the digest it was pinned by (when it was).
func pinMap(j *gantry.Job) map[string]string {
	m := map[string]string{}
	for _, d := range j.Spec.Run.Datasets {
		m[d.Target] = d.Source
	}
	for _, p := range j.Inputs.Datasets {
		if p.Digest != "" {
			m[p.Target] = p.Source + " " + short(p.Digest)
		}
	}
	return m
}

func shmText(n int64) string {
	if n == 0 {
		return "(the engine's)"
	}
	return gantry.FormatBytes(n)
}
