package daemon

// What a job's training container is given: its environment (the output
// directory, --env, and --secret-env's values, which are held in memory
// only) and its datasets.

import (
	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// containerEnv is job j's training environment: where to write outputs,
// then --env in order, then the values of --secret-env.
func (d *Daemon) containerEnv(j *gantry.Job) ([]string, error) {
	env := []string{gantry.OutputDirEnv + "=" + j.Spec.Outputs.Dir}
	env = append(env, j.Spec.Run.Env...)
	// TODO(inputs): the values of j.Spec.Run.SecretEnv.
	return env, nil
}

// datasetMounts are job j's datasets as read-only mounts.
func (d *Daemon) datasetMounts(j *gantry.Job) []runner.Mount {
	var ms []runner.Mount
	for _, ds := range j.Spec.Run.Datasets {
		ms = append(ms, runner.Mount{Source: ds.Source, Target: ds.Target, Volume: ds.Volume()})
	}
	return ms
}
