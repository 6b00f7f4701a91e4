package daemon

// Build secrets (gantry submit --secret): their values come beside the
// spec (the record keeps their IDs only) and are held in this process's
// memory only, from submit until the build has used them. A job's are held
// under its ID, a sweep's under the sweep's (its one build uses them once).

import (
	"context"
	"errors"

	"github.com/gantry-ml/gantry"
)

// errBuildSecretsLost fails a job whose build secrets died with a gantryd
// that stopped before the build used them.
var errBuildSecretsLost = errors.New("the values of --secret are held only in gantryd's memory, and gantryd restarted before the build used them: submit the job again")

// buildSecretStore holds build secrets' values by build (a job's ID, or a
// sweep's), in memory only.
type buildSecretStore = heldValues[[]byte]

// buildKey is what job j's build secrets are held under: its sweep's ID
// for a sweep's point (the sweep builds once), else its own.
func buildKey(j *gantry.Job) string {
	if j.Sweep != "" {
		return j.Sweep
	}
	return j.ID
}

// checkBuildSecrets checks that the build secrets ctx carries (the API put
// them there from the request's headers) are exactly those spec names. It
// returns ErrInvalid or ErrTooLarge, never quoting a value.
func checkBuildSecrets(ctx context.Context, spec *gantry.Spec) error {
	return gantry.CheckBuildSecrets(spec.Build.Secrets, gantry.BuildSecretsFrom(ctx))
}

// holdBuildSecrets holds the build secrets ctx carries under key, until
// the build that key names has used them.
func (d *Daemon) holdBuildSecrets(ctx context.Context, key string) {
	d.buildSecrets.put(key, gantry.BuildSecretsFrom(ctx))
}

// buildSecretsOf returns the values of job j's build secrets, for its
// build, or errBuildSecretsLost when it names some this gantryd does not
// hold.
func (d *Daemon) buildSecretsOf(j *gantry.Job) (map[string][]byte, error) {
	if len(j.Spec.Build.Secrets) == 0 {
		return nil, nil
	}
	vals, ok := d.buildSecrets.get(buildKey(j))
	if !ok {
		return nil, errBuildSecretsLost
	}
	return vals, nil
}

// builtWithSecrets forgets job j's build secrets once its build has ended
// on its own (built or failed). A build stopped by its job's cancel keeps
// them for a sweep, whose next point takes the build up; a job's are
// forgotten when it ends.
func (d *Daemon) builtWithSecrets(ctx context.Context, j *gantry.Job) {
	if ctx.Err() == nil || j.Sweep == "" {
		d.buildSecrets.forget(buildKey(j))
	}
}
