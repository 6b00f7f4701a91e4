package gantry

// What a job is given (environment, command, datasets, GPUs) and what it
// gives back (the files its training writes to the output directory).

import (
	"path"
	"regexp"
	"strconv"
	"strings"
)

// constraintRE is a swarm placement constraint: an attribute (node.id,
// node.hostname, node.role, node.platform.os, node.labels.KEY,
// engine.labels.KEY), == or !=, and a value.
var constraintRE = regexp.MustCompile(`^(node|engine)\.[A-Za-z0-9_.-]+ *(==|!=) *[^\s=!]+$`)

// DefaultOutputDir is where a training program writes what it produces,
// unless the job says otherwise; gantryd tells it in OutputDirEnv.
const (
	DefaultOutputDir = "/output"
	OutputDirEnv     = "GANTRY_OUTPUT_DIR"
)

// How a job's outputs ship with its pushed image.
const (
	// ShipLayer pushes the built image plus one layer holding the output
	// directory at its path: docker run of the pushed image finds the model.
	ShipLayer = "layer"
	// ShipArtifact pushes the built image unchanged and the outputs as an
	// OCI artifact whose subject is the image.
	ShipArtifact = "artifact"
	// ShipNone pushes the built image unchanged and nothing else.
	ShipNone = "none"
)

// OutputsType is the artifact type of a job's outputs pushed as an OCI
// artifact (--outputs=artifact); each file is one layer, titled by its path.
const OutputsType = "application/vnd.gantry.outputs.v1"

// RunSpec is what the training container is given besides its image.
type RunSpec struct {
	// Cmd, when set, replaces the image's command.
	Cmd []string `json:"cmd,omitempty"`
	// Env holds KEY=VALUE pairs set in the container, in order.
	Env []string `json:"env,omitempty"`
	// SecretEnv names variables whose values the client sends beside the
	// spec: they reach the container and are written nowhere by gantry.
	SecretEnv []string `json:"secret_env,omitempty"`
	// Datasets are mounted read-only.
	Datasets []Dataset `json:"datasets,omitempty"`
	// GPUs asks for GPUs as docker run --gpus does: "all", a count, or
	// "device=ID[,ID...]"; "" asks for none.
	GPUs string `json:"gpus,omitempty"`
	// ShmSize is the size of /dev/shm in bytes (zero: the engine's 64 MiB).
	ShmSize int64 `json:"shm_size,omitempty"`
	// Constraints place training on a cluster's nodes, as docker service
	// create --constraint takes them ("node.labels.pool==train"); only a
	// backend with nodes (swarm) takes them.
	Constraints []string `json:"constraints,omitempty"`
	// Retries is how many times training is tried again when the
	// infrastructure loses it (a node goes down); the user's own failures
	// are never retried.
	Retries int `json:"retries,omitempty"`
}

// MaxRetries bounds RunSpec.Retries.
const MaxRetries = 10

// Dataset is data mounted read-only into the training container.
type Dataset struct {
	// Source is a named Docker volume, or an absolute host path under one
	// of the roots gantryd's policy allows.
	Source string `json:"source"`
	// Target is the absolute path in the container.
	Target string `json:"target"`
}

// Volume reports whether the dataset's source is a named volume.
func (d Dataset) Volume() bool { return !strings.HasPrefix(d.Source, "/") }

// OutputSpec says where the training program writes its outputs, and how
// they ship.
type OutputSpec struct {
	// Dir is the output directory in the container (DefaultOutputDir).
	Dir string `json:"dir,omitempty"`
	// Ship is ShipLayer (the default), ShipArtifact or ShipNone.
	Ship string `json:"ship,omitempty"`
}

// Outputs are the files a job's training left in its output directory,
// copied out of the container once it exited and kept by content.
type Outputs struct {
	// Dir is the directory in the container they came from.
	Dir string `json:"dir"`
	// Files lists each regular file, by path inside Dir, in path order.
	Files []OutputFile `json:"files,omitempty"`
	// Bytes is the files' total size.
	Bytes int64 `json:"bytes"`
	// Layer is the image layer holding the files at Dir, once built (for
	// --outputs=layer): built once, pushed as it is.
	Layer *OutputLayer `json:"layer,omitempty"`
	// Error says why no outputs were kept, when copying them failed.
	Error string `json:"error,omitempty"`
}

// OutputFile is one file of a job's outputs.
type OutputFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
	Mode   uint32 `json:"mode"`
}

// OutputLayer is the layer that ships a job's outputs in its image.
type OutputLayer struct {
	// Digest is the compressed layer's digest, DiffID the uncompressed one.
	Digest string `json:"digest"`
	DiffID string `json:"diff_id"`
	Size   int64  `json:"size"`
}

// DatasetPin pins a dataset a job read by the digest of its tree.
type DatasetPin struct {
	Dataset
	// Digest is the sha256 over the tree's paths, modes and file digests.
	Digest string `json:"digest,omitempty"`
	Files  int    `json:"files"`
	Bytes  int64  `json:"bytes"`
	// Note says why there is no digest (a volume gantryd cannot read).
	Note string `json:"note,omitempty"`
}

// GPURequest is a request for GPUs: Count of them (-1 for all), or the
// devices named.
type GPURequest struct {
	Count     int
	DeviceIDs []string
}

// ParseGPUs reads a --gpus value the way docker run takes it: "all", a
// count ("2"), or "device=0,1" (quotes around it are allowed). "" asks for
// none. It returns ErrInvalid.
func ParseGPUs(s string) (GPURequest, error) {
	t := strings.Trim(strings.TrimSpace(s), `"`)
	switch {
	case t == "":
		return GPURequest{}, nil
	case t == "all":
		return GPURequest{Count: -1}, nil
	case strings.HasPrefix(t, "device="):
		var ids []string
		for _, id := range strings.Split(strings.TrimPrefix(t, "device="), ",") {
			if id = strings.TrimSpace(id); id == "" || strings.ContainsAny(id, " \t\"'") {
				return GPURequest{}, Errorf(ErrInvalid, "gpus %q: want device=ID[,ID...]", s)
			}
			ids = append(ids, id)
		}
		return GPURequest{DeviceIDs: ids}, nil
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > 1024 {
		return GPURequest{}, Errorf(ErrInvalid, "gpus %q: want all, a count like 1, or device=ID[,ID...] (as docker run --gpus takes it)", s)
	}
	return GPURequest{Count: n}, nil
}

// validate checks the run and output parts of a spec and fills their
// defaults. It returns ErrInvalid naming the flag at fault.
func (s *Spec) validateIO() error {
	r := &s.Run
	o := &s.Outputs
	if o.Dir == "" {
		o.Dir = DefaultOutputDir
	}
	if !absClean(o.Dir) || o.Dir == "/" {
		return Errorf(ErrInvalid, "output %q: want an absolute path in the container other than /, like /output", o.Dir)
	}
	switch o.Ship {
	case "":
		o.Ship = ShipLayer
	case ShipLayer, ShipArtifact, ShipNone:
	default:
		return Errorf(ErrInvalid, "outputs %q: want layer, artifact or none", o.Ship)
	}
	if r.Retries < 0 || r.Retries > MaxRetries {
		return Errorf(ErrInvalid, "retries %d: want 0 to %d", r.Retries, MaxRetries)
	}
	for _, c := range r.Constraints {
		if !constraintRE.MatchString(c) {
			return Errorf(ErrInvalid, "constraint %q: want ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, like node.labels.pool==train (as docker service create --constraint takes it)", c)
		}
	}
	if len(r.Cmd) > 0 && r.Cmd[0] == "" {
		return Errorf(ErrInvalid, "command: the program to run may not be empty")
	}
	seen := map[string]bool{}
	for _, kv := range r.Env {
		k, _, ok := strings.Cut(kv, "=")
		if err := checkEnvName(k, "env"); err != nil {
			return err
		}
		if !ok {
			return Errorf(ErrInvalid, "env %q: want KEY=VALUE", kv)
		}
		seen[k] = true
	}
	for _, k := range r.SecretEnv {
		if err := checkEnvName(k, "secret-env"); err != nil {
			return err
		}
		if seen[k] {
			return Errorf(ErrInvalid, "secret-env %s: also given by --env or --secret-env; give each variable once", k)
		}
		seen[k] = true
	}
	targets := map[string]bool{}
	for _, d := range r.Datasets {
		if err := d.check(o.Dir); err != nil {
			return err
		}
		if targets[d.Target] {
			return Errorf(ErrInvalid, "dataset %s:%s: another dataset is mounted at %s", d.Source, d.Target, d.Target)
		}
		targets[d.Target] = true
	}
	if _, err := ParseGPUs(r.GPUs); err != nil {
		return err
	}
	if r.ShmSize < 0 {
		return Errorf(ErrInvalid, "shm-size %d: must not be negative", r.ShmSize)
	}
	return nil
}

// checkEnvName checks an environment variable's name given with flag; the
// name gantryd sets itself is refused.
func checkEnvName(k, flag string) error {
	if k == "" || strings.ContainsAny(k, "= \t\n\x00") {
		return Errorf(ErrInvalid, "%s %q: a variable's name may not be empty or hold '=', spaces or NUL", flag, k)
	}
	if k == OutputDirEnv {
		return Errorf(ErrInvalid, "%s %s: gantryd sets it to the output directory; change that with --output", flag, k)
	}
	return nil
}

// check checks a dataset's form (whether its source is allowed is gantryd's
// to say): a volume name or an absolute clean path, mounted at an absolute
// path that is neither / nor the output directory, nor inside or around it.
func (d Dataset) check(outputDir string) error {
	bad := func(why string) error {
		return Errorf(ErrInvalid, "dataset %s:%s: %s", d.Source, d.Target, why)
	}
	if d.Volume() {
		if !validName(d.Source) || d.Source == "" {
			return bad("the source must be a named volume or an absolute host path")
		}
	} else if !absClean(d.Source) || hasDotDot(d.Source) {
		return bad("the host path must be absolute and clean (no '..', no '//')")
	}
	if !absClean(d.Target) || d.Target == "/" {
		return bad("mount it at an absolute path in the container other than /, like /data")
	}
	if within(d.Target, outputDir) || within(outputDir, d.Target) {
		return bad("it would cover the output directory " + outputDir + ", or lie inside it")
	}
	return nil
}

// absClean reports whether p is an absolute, clean path.
func absClean(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.ContainsRune(p, 0)
}

// within reports whether p is dir or lies inside it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// KeptOutputs returns the outputs job j kept. It returns ErrConflict while
// its training has not ended (they are copied when it does), and ErrNotFound
// when the job kept none: it ended before they were copied (at its build,
// or training was stopped), or copying them failed (the reason is said).
func (j *Job) KeptOutputs() (*Outputs, error) {
	switch o := j.Outputs; {
	case o != nil && o.Error != "":
		return nil, Errorf(ErrNotFound, "job %s kept no outputs: %s", j.ID, o.Error)
	case o != nil:
		return o, nil
	case !j.State.Terminal():
		return nil, Errorf(ErrConflict, "job %s is %s: its outputs are copied when training ends", j.ID, j.State)
	}
	return nil, Errorf(ErrNotFound, "job %s kept no outputs: it ended %s before they were copied", j.ID, j.State)
}
