package builder

// Build secrets: BuildKit asks the client's session for a secret by ID
// when a RUN step mounts it (RUN --mount=type=secret,id=ID); the values
// live only in this process for the build's time.

import (
	"maps"

	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
)

// secretsAttachable serves vals to the build's session. With none it still
// answers, NotFound for every ID, so a Dockerfile that mounts a secret
// the job did not pass fails at that step (or builds, with required=false).
func secretsAttachable(vals map[string][]byte) session.Attachable {
	return secretsprovider.FromMap(maps.Clone(vals))
}
