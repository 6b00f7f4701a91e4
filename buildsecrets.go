package gantry

// Build secrets: values a build's RUN steps mount (RUN
// --mount=type=secret,id=ID) that travel beside the spec, never in it, and
// are held in gantryd's memory until the build has used them.

import (
	"context"
	"maps"
	"slices"
)

// Bounds on a submission's build secrets.
const (
	// MaxBuildSecrets bounds how many build secrets a job may pass.
	MaxBuildSecrets = 32
	// MaxBuildSecretBytes bounds one build secret's value.
	MaxBuildSecretBytes = 64 << 10
	// MaxBuildSecretsBytes bounds the values of a job's build secrets
	// together (they travel in one request's headers).
	MaxBuildSecretsBytes = 256 << 10
)

// What BuildSpec.Provenance may be, in buildx's shape.
const (
	// ProvenanceMax records the build arguments with their values.
	ProvenanceMax = "max"
	// ProvenanceMin records the build arguments' names only.
	ProvenanceMin = "min"
)

// ValidBuildSecretID reports whether id may name a build secret: 1 to 128
// letters, digits, '_', '.' or '-', not starting with '.' or '-' (BuildKit
// mounts it at /run/secrets/ID).
func ValidBuildSecretID(id string) bool {
	return validTag(id)
}

// validateSecrets checks the build secrets' IDs (valid, unique, not too
// many) and the provenance mode. It returns ErrInvalid.
func (b *BuildSpec) validateSecrets() error {
	if len(b.Secrets) > MaxBuildSecrets {
		return Errorf(ErrInvalid, "build secrets: %d, over the %d a job may pass", len(b.Secrets), MaxBuildSecrets)
	}
	for i, id := range b.Secrets {
		if !ValidBuildSecretID(id) {
			return Errorf(ErrInvalid, "build secret id %q: want 1 to 128 letters, digits, '_', '.' or '-', not first '.' or '-'", id)
		}
		if slices.Contains(b.Secrets[:i], id) {
			return Errorf(ErrInvalid, "build secret id %q: given twice", id)
		}
	}
	switch b.Provenance {
	case "", ProvenanceMax, ProvenanceMin:
	default:
		return Errorf(ErrInvalid, "provenance %q: want min (build argument names only) or max (with their values)", b.Provenance)
	}
	return nil
}

// CheckBuildSecrets checks that vals are exactly the values of the build
// secrets ids names, within the bounds. It returns ErrInvalid or
// ErrTooLarge, never quoting a value.
func CheckBuildSecrets(ids []string, vals map[string][]byte) error {
	total := 0
	for _, id := range ids {
		v, ok := vals[id]
		if !ok {
			return Errorf(ErrInvalid, "build secret %s: no value came with the submission (gantry submit --secret id=%s,src=FILE sends it beside the spec)", id, id)
		}
		if len(v) > MaxBuildSecretBytes {
			return Errorf(ErrTooLarge, "build secret %s: %s, over the %s one may hold", id, FormatBytes(int64(len(v))), FormatBytes(MaxBuildSecretBytes))
		}
		total += len(v)
	}
	if total > MaxBuildSecretsBytes {
		return Errorf(ErrTooLarge, "build secrets: %s together, over the %s a job may pass", FormatBytes(int64(total)), FormatBytes(MaxBuildSecretsBytes))
	}
	for id := range vals {
		if !slices.Contains(ids, id) {
			return Errorf(ErrInvalid, "a build secret value came for %q, which the spec's build secrets do not name", id)
		}
	}
	return nil
}

type buildSecretsKey struct{}

// WithBuildSecrets returns ctx carrying the values of a submission's build
// secrets, by ID: the client sends them beside the spec, and the API hands
// them to the daemon's Submit and SubmitSweep this way.
func WithBuildSecrets(ctx context.Context, vals map[string][]byte) context.Context {
	if len(vals) == 0 {
		return ctx
	}
	return context.WithValue(ctx, buildSecretsKey{}, maps.Clone(vals))
}

// BuildSecretsFrom returns the build secrets' values ctx carries (nil for
// none), as WithBuildSecrets put them.
func BuildSecretsFrom(ctx context.Context) map[string][]byte {
	v, _ := ctx.Value(buildSecretsKey{}).(map[string][]byte)
	return v
}
