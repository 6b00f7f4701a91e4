// Package gantry is the domain of gantry: a job that builds a training image,
// runs it, reads the accuracy it reports, and pushes the image only when the
// job passes its gate. It holds the types, the state machine and the error
// kinds, and does no I/O; every other package depends on it.
package gantry

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// State is where a job is in its life.
type State string

// The states of a job. A job moves forward only, through the transitions
// listed in transitions, and ends in exactly one terminal state.
const (
	StateQueued    State = "queued"
	StateBuilding  State = "building"
	StateRunning   State = "running"
	StatePushing   State = "pushing"
	StateSucceeded State = "succeeded" // trained; pushed where asked
	StateRejected  State = "rejected"  // trained with exit 0, but the gate failed: nothing pushed
	StateFailed    State = "failed"    // build error, non-zero exit, push error
	StateCanceled  State = "canceled"
)

// States lists every state in the order of a job's life.
var States = []State{
	StateQueued, StateBuilding, StateRunning, StatePushing,
	StateSucceeded, StateRejected, StateFailed, StateCanceled,
}

// transitions is the state machine: for each state, the states it may move to.
var transitions = map[State][]State{
	StateQueued:   {StateBuilding, StateFailed, StateCanceled},
	StateBuilding: {StateRunning, StateFailed, StateCanceled},
	StateRunning:  {StatePushing, StateSucceeded, StateRejected, StateFailed, StateCanceled},
	StatePushing:  {StateSucceeded, StateFailed, StateCanceled},
}

// Terminal reports whether s ends a job's life.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateRejected, StateFailed, StateCanceled:
		return true
	}
	return false
}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// CanMove reports whether a job in state from may move to state to.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// BuildSpec says how to build a job's image, the way docker build takes it.
type BuildSpec struct {
	// Dockerfile is the Dockerfile's path inside the build context.
	Dockerfile string            `json:"dockerfile,omitempty"`
	BuildArgs  map[string]string `json:"build_args,omitempty"`
	Target     string            `json:"target,omitempty"`
	// Secrets are the IDs of the build secrets (RUN
	// --mount=type=secret,id=ID) whose values came beside the spec: the
	// record keeps the IDs only (buildsecrets.go).
	Secrets []string `json:"secrets,omitempty"`
	// Provenance is what the provenance record keeps of the build:
	// ProvenanceMax ("") its build arguments with their values,
	// ProvenanceMin their names only.
	Provenance string `json:"provenance,omitempty"`
}

// Spec is what a user submits: how to build, and what to do with the result.
type Spec struct {
	Build BuildSpec `json:"build"`
	// Push lists the references the image is pushed to when the job passes.
	Push []string `json:"push,omitempty"`
	// MinAccuracy, when set, is the gate: the accuracy must be at least this.
	MinAccuracy *float64 `json:"min_accuracy,omitempty"`
	// MetricRegex, when set, replaces the default accuracy pattern. Its first
	// capture group (or the whole match) is the accuracy.
	MetricRegex string `json:"metric_regex,omitempty"`
	// Timeouts bound each phase; zero takes the daemon's default.
	Timeouts Timeouts `json:"timeouts,omitzero"`
	// Resources limit the training container; zero takes the daemon's default.
	Resources Resources `json:"resources,omitzero"`
	// Sandbox relaxes the training container's least-privilege defaults.
	Sandbox Sandbox `json:"sandbox,omitzero"`
	// Promote, when set, is the tag (in the repository of each push
	// reference) that moves to the job's image only when its value of the
	// PromoteOn metric beats the image the tag holds now by at least
	// MinImprovement.
	Promote        string  `json:"promote,omitempty"`
	MinImprovement float64 `json:"min_improvement,omitempty"`
	// Run is what the training container is given: command, environment,
	// datasets, GPUs.
	Run RunSpec `json:"run,omitzero"`
	// Outputs says where training writes what it produces, and how that
	// ships with the pushed image.
	Outputs OutputSpec `json:"outputs,omitzero"`
	// Metrics read named metrics from the output besides accuracy and the
	// structured lines (MetricLine).
	Metrics []MetricPattern `json:"metrics,omitempty"`
	// Gates must all hold for the job to pass (MinAccuracy is one more:
	// accuracy>=X).
	Gates []Condition `json:"gates,omitempty"`
	// PromoteOn is the objective the champion is chosen by, "NAME:max" or
	// "NAME:min" ("": accuracy:max); MinImprovement is in its direction.
	PromoteOn string `json:"promote_on,omitempty"`
	// Webhooks are URLs told (a signed job.ended event) when the job
	// ends, besides gantryd's own --webhook URLs.
	Webhooks []string `json:"webhooks,omitempty"`
}

// Sandbox is what a job may relax of the training container's defaults: no
// network, every capability dropped, no-new-privileges, a pids limit, and no
// host path or Docker socket mounted (which no option relaxes). What it may
// ask is bounded by gantryd's Policy.
type Sandbox struct {
	// Network is the network to join, "" meaning none.
	Network string `json:"network,omitempty"`
	// CapAdd lists the capabilities to keep ("NET_BIND_SERVICE").
	CapAdd []string `json:"cap_add,omitempty"`
}

// Timeouts bound the phases of a job. A phase that runs longer ends the job
// as failed, naming the phase and the limit.
type Timeouts struct {
	Build Duration `json:"build,omitzero"`
	Train Duration `json:"train,omitzero"`
	Push  Duration `json:"push,omitzero"`
}

// Resources limit the training container.
type Resources struct {
	// Memory is the memory limit in bytes.
	Memory int64 `json:"memory,omitempty"`
	// CPUs is the number of CPUs, as docker run --cpus takes it.
	CPUs float64 `json:"cpus,omitempty"`
	// PidsLimit caps the number of processes.
	PidsLimit int64 `json:"pids_limit,omitempty"`
	// LogBytes caps the training output kept, in gantry's log and in the
	// engine's own log of the container.
	LogBytes int64 `json:"log_bytes,omitempty"`
	// OutputBytes caps the outputs copied out of the container.
	OutputBytes int64 `json:"output_bytes,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as "1m30s".
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// UnmarshalJSON reads a Go duration string ("90s", "1h").
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("want a duration like \"10m\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Validate checks a spec before any of it is recorded (the metric pattern,
// which is the trainer contract's, is checked by trainer.Compile). It
// returns an error of kind ErrInvalid naming the field at fault.
func (s *Spec) Validate() error {
	if s.Build.Dockerfile == "" {
		s.Build.Dockerfile = "Dockerfile"
	}
	if strings.HasPrefix(s.Build.Dockerfile, "/") || hasDotDot(s.Build.Dockerfile) {
		return Errorf(ErrInvalid, "dockerfile %q: must be a relative path inside the build context", s.Build.Dockerfile)
	}
	for k := range s.Build.BuildArgs {
		if k == "" || strings.ContainsAny(k, "= \t\n") {
			return Errorf(ErrInvalid, "build arg %q: a name may not be empty or hold '=' or spaces", k)
		}
	}
	if err := s.Build.validateSecrets(); err != nil {
		return err
	}
	for name, t := range map[string]Duration{"build": s.Timeouts.Build, "train": s.Timeouts.Train, "push": s.Timeouts.Push} {
		if t < 0 {
			return Errorf(ErrInvalid, "%s timeout %v: must not be negative", name, time.Duration(t))
		}
	}
	if r := s.Resources; r.Memory < 0 || r.CPUs < 0 || r.CPUs != r.CPUs || r.CPUs > 1e6 || r.PidsLimit < 0 || r.LogBytes < 0 || r.OutputBytes < 0 {
		return Errorf(ErrInvalid, "resources %+v: limits must not be negative", r)
	}
	if r := s.Resources; r.Memory != 0 && r.Memory < 6<<20 {
		return Errorf(ErrInvalid, "memory limit %d bytes: the engine needs at least 6 MiB", r.Memory)
	}
	if n := s.Sandbox.Network; n != "" && !validName(n) {
		return Errorf(ErrInvalid, "network %q: want a Docker network name", n)
	}
	for i, c := range s.Sandbox.CapAdd {
		n, err := NormalizeCapability(c)
		if err != nil {
			return err
		}
		s.Sandbox.CapAdd[i] = n
	}
	if s.Promote != "" && !validTag(s.Promote) {
		return Errorf(ErrInvalid, "promote %q: want a tag (letters, digits, '_', '.', '-'; 128 at most)", s.Promote)
	}
	if m := s.MinImprovement; m != m || m < 0 || math.IsInf(m, 0) {
		return Errorf(ErrInvalid, "min_improvement %v: must be a finite number, 0 or more (in the --promote-on metric's units)", m)
	}
	if s.MinAccuracy != nil {
		a := *s.MinAccuracy
		if a != a || a < 0 || a > 1 {
			return Errorf(ErrInvalid, "min_accuracy %v: must be between 0 and 1", a)
		}
	}
	for _, r := range s.Push {
		if _, err := ParseRef(r); err != nil {
			return Errorf(ErrInvalid, "push reference: %v", err)
		}
	}
	if err := s.validateMeasure(); err != nil {
		return err
	}
	return s.validateIO()
}

// validTag reports whether s is a valid image tag.
func validTag(s string) bool {
	if len(s) == 0 || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-", r)) {
			return false
		}
	}
	return true
}

// validName reports whether s may name a Docker network.
func validName(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && strings.ContainsRune("_.-", r)
		if !ok {
			return false
		}
	}
	return true
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// Push is one reference a job's image was pushed to, with the manifest
// digest the registry serves for it.
type Push struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	// Bytes is the size of what the push covered (blobs the registry
	// already had count too).
	Bytes int64 `json:"bytes,omitempty"`
}

// Metrics are what the training program reported.
type Metrics struct {
	Accuracy *float64 `json:"accuracy,omitempty"`
	// AccuracyError says why there is no accuracy, when training ended
	// without reporting a valid one.
	AccuracyError string `json:"accuracy_error,omitempty"`
	// Values holds every named metric's final value (accuracy included
	// when reported); the series are kept beside the record.
	Values map[string]float64 `json:"values,omitempty"`
	// Problems lists malformed metric lines (the first MaxMetricProblems).
	Problems []string `json:"problems,omitempty"`
}

// Phase records when one phase of a job started and ended.
type Phase struct {
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
}

// Times holds the timestamps of each phase.
type Times struct {
	Created  time.Time  `json:"created"`
	Build    Phase      `json:"build"`
	Run      Phase      `json:"run"`
	Push     Phase      `json:"push"`
	Finished *time.Time `json:"finished,omitempty"`
}

// Job is the record gantry keeps of one submission.
type Job struct {
	ID    string `json:"id"`
	Spec  Spec   `json:"spec"`
	State State  `json:"state"`
	// Error says, for a failed, rejected or canceled job, what happened.
	Error string `json:"error,omitempty"`
	// ImageName is the local name the build tags the image with.
	ImageName string `json:"image_name,omitempty"`
	// Image is the local image ID the build produced.
	Image string `json:"image,omitempty"`
	// ContainerID is the backend's ID of the training run: a container
	// on the local backend, a service on a swarm.
	ContainerID string `json:"container_id,omitempty"`
	// Placement is where training runs or ran; Attempts are the earlier
	// runs the infrastructure lost (RunSpec.Retries).
	Placement *Placement `json:"placement,omitempty"`
	Attempts  []Attempt  `json:"attempts,omitempty"`
	// TrainLogOffset is where the training container's output starts in
	// the job's log: recovery cuts the log back to it before the
	// container's log is replayed.
	TrainLogOffset int64 `json:"train_log_offset,omitempty"`
	// Checkpoint is the last step of the run whose outcome is recorded.
	Checkpoint Checkpoint `json:"checkpoint,omitempty"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	Metrics    Metrics    `json:"metrics"`
	Pushes     []Push     `json:"pushes,omitempty"`
	Times      Times      `json:"times"`
	// ContextSize is the size in bytes of the build context as received.
	ContextSize int64 `json:"context_size"`
	// CancelRequested is set when a user asked to cancel the job; a
	// gantryd that restarts finishes the cancel.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// GatePassed is set once training exited 0 and passed the gate: the
	// image may be pushed (again, with gantry push).
	GatePassed bool `json:"gate_passed,omitempty"`
	// Inputs pin what the job was built from.
	Inputs Inputs `json:"inputs,omitzero"`
	// Provenance is the record of what produced the result, set when the
	// job pushes (it is what goes to the registry) or ends.
	Provenance *Provenance `json:"provenance,omitempty"`
	// Promotions are the decisions on the champion tag, one per repository.
	Promotions []Promotion `json:"promotions,omitempty"`
	// Outputs are the files training left in the output directory, set
	// once the container exited (with checkpoint exited).
	Outputs *Outputs `json:"outputs,omitempty"`
	// Sweep is the sweep the job is a point of, and Params its point.
	Sweep  string            `json:"sweep,omitempty"`
	Params map[string]string `json:"params,omitempty"`
	// Webhooks are the messages sent when the job ends, one per URL (the
	// spec's and gantryd's), each with its delivery attempts.
	Webhooks []Webhook `json:"webhooks,omitempty"`
}

// NewJob returns a queued job for spec, with a fresh ID.
func NewJob(spec Spec, now time.Time) *Job {
	id := NewID(now)
	return &Job{
		ID:        id,
		Spec:      spec,
		State:     StateQueued,
		ImageName: "gantry/job:" + id,
		Times:     Times{Created: now.UTC()},
	}
}

// Move moves j to state to at time now, stamping the phase times. It returns
// ErrConflict when the state machine does not allow the move.
func (j *Job) Move(to State, now time.Time) error {
	if !CanMove(j.State, to) {
		return Errorf(ErrConflict, "job %s: cannot move from %s to %s", j.ID, j.State, to)
	}
	now = now.UTC()
	end := func(p *Phase) {
		if p.Started != nil && p.Finished == nil {
			p.Finished = &now
		}
	}
	end(&j.Times.Build)
	end(&j.Times.Run)
	end(&j.Times.Push)
	switch to {
	case StateBuilding:
		j.Times.Build.Started = &now
	case StateRunning:
		j.Times.Run.Started = &now
	case StatePushing:
		j.Times.Push.Started = &now
	}
	if to.Terminal() {
		j.Times.Finished = &now
	}
	j.State = to
	return nil
}

// idAlphabet is Crockford's base32, lowercase: no look-alike letters, and
// encoding keeps byte order, so IDs sort as their bytes do.
const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

var idEncoding = base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)

var (
	idMu   sync.Mutex
	lastID [10]byte
)

// NewID returns a 16-character job ID: 48 bits of milliseconds, then 32
// random bits. IDs from one process sort in the order they were made, even
// within a millisecond (the later one is the earlier plus one), so the order
// of keys is the order of submission.
func NewID(now time.Time) string {
	var b [10]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	if _, err := rand.Read(b[6:]); err != nil {
		panic(fmt.Sprintf("gantry: reading random bytes: %v", err))
	}
	idMu.Lock()
	defer idMu.Unlock()
	if bytes.Compare(b[:], lastID[:]) <= 0 {
		b = lastID
		for i := len(b) - 1; i >= 0; i-- {
			b[i]++
			if b[i] != 0 {
				break
			}
		}
	}
	lastID = b
	return idEncoding.EncodeToString(b[:])
}

// ValidID reports whether id has the form NewID produces, so that it is safe
// to use in file names and labels.
func ValidID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if strings.IndexByte(idAlphabet, id[i]) < 0 {
			return false
		}
	}
	return true
}

// ParseBytes reads a size the way docker run --memory takes it: a number
// with an optional unit b, k, m or g (powers of 1024). "" is 0. It returns
// ErrInvalid.
func ParseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1<<10, t[:n-1]
		case 'm':
			mult, t = 1<<20, t[:n-1]
		case 'g':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v != v || v*float64(mult) > 1<<62 {
		return 0, Errorf(ErrInvalid, "size %q: want a number with an optional unit b, k, m or g, like 512m", s)
	}
	return int64(v * float64(mult)), nil
}

// Name is the image name a job's results are grouped under: the repository
// of its first push reference ("127.0.0.1:5000/iris",
// "index.docker.io/user/repo"), or "" for a job that pushes nowhere.
func (j *Job) Name() string {
	if len(j.Spec.Push) == 0 {
		return ""
	}
	return Repository(j.Spec.Push[0])
}
