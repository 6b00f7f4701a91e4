package daemon

// What a job's training container is given: its environment (the output
// directory, --env, and --secret-env's values, which are held in memory
// only) and its datasets (datasets.go).

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// errSecretsLost fails a job whose --secret-env values died with a gantryd
// that stopped before the job's container was created.
var errSecretsLost = errors.New("the values of --secret-env are held only in gantryd's memory, and gantryd restarted before the job's container was created: submit the job again")

// secretStore holds the values of jobs' --secret-env, by job ID, in memory
// only: from submit until the job's container is created (the engine holds
// them from then on) or the job ends. Nothing of them is written by gantryd.
type secretStore = heldValues[string]

// heldValues holds secret values by key (a job's or a sweep's ID) in this
// process's memory only. An empty set of values is not held.
type heldValues[V any] struct {
	mu sync.Mutex
	m  map[string]map[string]V
}

func (s *heldValues[V]) put(key string, vals map[string]V) {
	if len(vals) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]map[string]V{}
	}
	s.m[key] = maps.Clone(vals)
}

func (s *heldValues[V]) get(key string) (map[string]V, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok
}

func (s *heldValues[V]) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

// checkSecrets checks that secrets are exactly the values of the variables
// spec's SecretEnv names. It returns ErrInvalid, never quoting a value.
func checkSecrets(spec gantry.Spec, secrets map[string]string) error {
	names := spec.Run.SecretEnv
	for _, k := range names {
		v, ok := secrets[k]
		if !ok {
			return gantry.Errorf(gantry.ErrInvalid, "secret-env %s: no value came with the submission (gantry submit sends it from its own environment, in the Gantry-Secret-Env header)", k)
		}
		if strings.ContainsRune(v, 0) {
			return gantry.Errorf(gantry.ErrInvalid, "secret-env %s: its value holds a NUL byte, which no environment variable can", k)
		}
	}
	for k := range secrets {
		if !slices.Contains(names, k) {
			return gantry.Errorf(gantry.ErrInvalid, "a --secret-env value came for %q, which the spec's secret_env does not name", k)
		}
	}
	return nil
}

// secretsKept returns errSecretsLost when job j needs --secret-env values
// that this gantryd does not hold: it was submitted to one that stopped.
func (d *Daemon) secretsKept(j *gantry.Job) error {
	if len(j.Spec.Run.SecretEnv) == 0 {
		return nil
	}
	if _, ok := d.secrets.get(j.ID); !ok {
		return errSecretsLost
	}
	return nil
}

// containerEnv is job j's training environment: where to write outputs,
// then --env in order, then the values of --secret-env. It returns
// errSecretsLost when those are not held.
func (d *Daemon) containerEnv(j *gantry.Job) ([]string, error) {
	env := []string{gantry.OutputDirEnv + "=" + j.Spec.Outputs.Dir}
	env = append(env, j.Spec.Run.Env...)
	if err := d.secretsKept(j); err != nil {
		return nil, err
	}
	vals, _ := d.secrets.get(j.ID)
	for _, k := range j.Spec.Run.SecretEnv {
		env = append(env, k+"="+vals[k])
	}
	return env, nil
}

// datasetMounts are job j's datasets as read-only mounts: a host path as the
// record holds it, its real path (resolved at submit and checked again as
// the job pinned it).
func (d *Daemon) datasetMounts(j *gantry.Job) []runner.Mount {
	var ms []runner.Mount
	for _, ds := range j.Spec.Run.Datasets {
		ms = append(ms, runner.Mount{Source: ds.Source, Target: ds.Target, Volume: ds.Volume()})
	}
	return ms
}
