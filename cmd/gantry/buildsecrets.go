// gantry submit --secret: build secrets in buildx's syntax, read here and
// sent beside the spec (which names their IDs only).

package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/gantry-ml/gantry"
)

// buildSecret is one --secret: the ID the Dockerfile mounts, and where its
// value is read from (a file, or this shell's environment).
type buildSecret struct {
	id, src, env string
}

// parseBuildSecret reads --secret as buildx takes it:
// id=NAME[,src=FILE|,env=VAR][,type=file|env] ("source" for src). With
// neither src nor env, type=env reads the variable NAME; else it is an
// error.
func parseBuildSecret(s string) (buildSecret, error) {
	var b buildSecret
	typ := ""
	for _, field := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return b, fmt.Errorf("--secret %q: want id=NAME,src=FILE or id=NAME,env=VAR", s)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "id":
			b.id = v
		case "src", "source":
			b.src = v
		case "env":
			b.env = v
		case "type":
			typ = v
		default:
			return b, fmt.Errorf("--secret %q: unknown field %q (want id, src, env or type)", s, k)
		}
	}
	switch {
	case typ != "" && typ != "file" && typ != "env":
		return b, fmt.Errorf("--secret %q: type %q, want file or env", s, typ)
	case b.id == "":
		return b, fmt.Errorf("--secret %q: give its id=NAME, which RUN --mount=type=secret,id=NAME mounts", s)
	case !gantry.ValidBuildSecretID(b.id):
		return b, fmt.Errorf("--secret %q: id %q, want letters, digits, '_', '.' or '-'", s, b.id)
	case b.src != "" && b.env != "":
		return b, fmt.Errorf("--secret %q: give src or env, not both", s)
	case b.src == "" && b.env == "" && typ == "env":
		b.env = b.id
	case b.src == "" && b.env == "":
		return b, fmt.Errorf("--secret %q: say where its value is: src=FILE or env=VAR", s)
	}
	return b, nil
}

// buildSecrets reads each --secret's value (from its file, or from this
// shell's environment through lookup), names their IDs in spec, and
// returns ctx carrying the values for the client to send.
func buildSecrets(ctx context.Context, spec *gantry.Spec, flags []string, lookup func(string) (string, bool)) (context.Context, error) {
	vals := map[string][]byte{}
	for _, f := range flags {
		b, err := parseBuildSecret(f)
		if err != nil {
			return nil, err
		}
		if _, dup := vals[b.id]; dup {
			return nil, fmt.Errorf("--secret: id %q given twice", b.id)
		}
		var v []byte
		if b.src != "" {
			if v, err = readSecretFile(b.src); err != nil {
				return nil, fmt.Errorf("--secret %s: %w", b.id, err)
			}
		} else {
			s, ok := lookup(b.env)
			if !ok {
				return nil, fmt.Errorf("--secret %s: %s is not set in this shell's environment", b.id, b.env)
			}
			v = []byte(s)
		}
		vals[b.id] = v
		spec.Build.Secrets = append(spec.Build.Secrets, b.id)
	}
	if err := gantry.CheckBuildSecrets(spec.Build.Secrets, vals); err != nil {
		return nil, err
	}
	return gantry.WithBuildSecrets(ctx, vals), nil
}

// readSecretFile reads a secret's file, refusing one over the bound before
// reading it all.
func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory, want a file", path)
	}
	if fi.Size() > gantry.MaxBuildSecretBytes {
		return nil, fmt.Errorf("%s: %s, over the %s a build secret may hold", path,
			gantry.FormatBytes(fi.Size()), gantry.FormatBytes(gantry.MaxBuildSecretBytes))
	}
	return os.ReadFile(path)
}
