package gantry

import (
	"fmt"
	"time"
)

// ProvenanceType is the media type of the provenance record gantry pushes
// beside an image, as an OCI artifact whose subject is the image.
const ProvenanceType = "application/vnd.gantry.provenance.v1+json"

// Inputs is what a job was built from, pinned by digest.
type Inputs struct {
	// ContextDigest is the sha256 of the build context's tar stream.
	ContextDigest string `json:"context_digest,omitempty"`
	// Files maps each regular file of the context to its sha256.
	Files map[string]string `json:"files,omitempty"`
	// DockerfileDigest is the sha256 of the Dockerfile.
	DockerfileDigest string `json:"dockerfile_digest,omitempty"`
	// Bases are the images the build started FROM, with the image ID the
	// engine resolved each to.
	Bases []Base `json:"bases,omitempty"`
	// Datasets are the datasets the training read, pinned by their trees.
	Datasets []DatasetPin `json:"datasets,omitempty"`
}

// Base is one image a build started from.
type Base struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest,omitempty"`
}

// Gate is the gate's verdict.
type Gate struct {
	MinAccuracy *float64 `json:"min_accuracy,omitempty"`
	Passed      bool     `json:"passed"`
	Reason      string   `json:"reason,omitempty"`
}

// Provenance is the record of what produced a job's result: its inputs,
// the image, the metrics, the gate's verdict, the pushes, and the times.
// gantry inspect shows it; gantry pushes it beside the image.
type Provenance struct {
	Job           string            `json:"job"`
	GantryVersion string            `json:"gantry_version"`
	Dockerfile    string            `json:"dockerfile"`
	BuildArgs     map[string]string `json:"build_args,omitempty"`
	Target        string            `json:"target,omitempty"`
	Inputs        Inputs            `json:"inputs"`
	Image         string            `json:"image"`
	Pushes        []Push            `json:"pushes,omitempty"`
	Metrics       Metrics           `json:"metrics"`
	Gate          Gate              `json:"gate"`
	ExitCode      *int              `json:"exit_code,omitempty"`
	Times         Times             `json:"times"`
	// Run is what the training container was given (secret values never:
	// their names only).
	Run RunSpec `json:"run,omitzero"`
	// Outputs are the files training produced, by digest.
	Outputs *Outputs `json:"outputs,omitempty"`
	// Built is the manifest digest of the image as built, Shipped the one
	// pushed (the built image plus the outputs' layer, or the same).
	Built   string `json:"built,omitempty"`
	Shipped string `json:"shipped,omitempty"`
}

// Promotion is the decision on moving a champion tag to a job's image.
type Promotion struct {
	Tag      string `json:"tag"`
	Promoted bool   `json:"promoted"`
	// Reason says why, with both accuracies ("promoted: 0.9667 > 0.9333").
	Reason string `json:"reason"`
}

// NewProvenance returns the provenance of j as it stands.
func NewProvenance(j *Job) *Provenance {
	reason := ""
	if !j.GatePassed {
		reason = j.Error
	}
	return &Provenance{
		Job:           j.ID,
		GantryVersion: Version,
		Dockerfile:    j.Spec.Build.Dockerfile,
		BuildArgs:     j.Spec.Build.BuildArgs,
		Target:        j.Spec.Build.Target,
		Inputs:        j.Inputs,
		Image:         j.Image,
		Pushes:        j.Pushes,
		Metrics:       j.Metrics,
		Gate:          Gate{MinAccuracy: j.Spec.MinAccuracy, Passed: j.GatePassed, Reason: reason},
		ExitCode:      j.ExitCode,
		Times:         j.Times,
		Run:           j.Spec.Run,
		Outputs:       j.Outputs,
	}
}

// Judge is the gate's verdict on a job that trained with exit 0: it passes
// when it has no minimum accuracy, or reported one at least as high.
func Judge(min *float64, m Metrics) Gate {
	g := Gate{MinAccuracy: min, Passed: true}
	switch {
	case min == nil:
	case m.Accuracy == nil:
		g.Passed, g.Reason = false, fmt.Sprintf("the gate needs accuracy >= %g, but %s", *min, m.AccuracyError)
	case *m.Accuracy < *min:
		g.Passed, g.Reason = false, fmt.Sprintf("accuracy %.4f is below the gate %g", *m.Accuracy, *min)
	}
	return g
}

// Decide says whether a candidate accuracy beats the champion's by at least
// minImprovement (strictly, when it is 0), and why. champion is nil when the
// tag holds no image with a provenance record; then the candidate wins.
func Decide(tag string, candidate float64, champion *float64, minImprovement float64) Promotion {
	p := Promotion{Tag: tag}
	switch {
	case champion == nil:
		p.Promoted = true
		p.Reason = "promoted: the tag held no image with a provenance record"
	case candidate > *champion && candidate-*champion >= minImprovement:
		p.Promoted = true
		p.Reason = fmtAcc("promoted: %.4f > %.4f", candidate, *champion)
	case candidate > *champion:
		p.Reason = fmtAcc("kept champion: %.4f beats %.4f by less than %g", candidate, *champion, minImprovement)
	default:
		p.Reason = fmtAcc("kept champion: %.4f <= %.4f", candidate, *champion)
	}
	return p
}

func fmtAcc(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// HistoryEntry is one job that pushed to an image name, as gantry history
// shows it.
type HistoryEntry struct {
	Job      string    `json:"job"`
	Created  time.Time `json:"created"`
	State    State     `json:"state"`
	Accuracy *float64  `json:"accuracy,omitempty"`
	// Digest is what the job pushed to the name's repository.
	Digest string `json:"digest,omitempty"`
	// Champion is set when the tag asked about holds the job's image now.
	Champion bool   `json:"champion"`
	Reason   string `json:"reason,omitempty"`
}
