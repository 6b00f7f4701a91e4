package gantry

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
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
	// Conditions are every condition the job was judged by: its gates, and
	// accuracy>=MinAccuracy when that is set (see Spec.Conditions).
	Conditions []Condition `json:"conditions,omitempty"`
	Passed     bool        `json:"passed"`
	// Reason names every condition that failed, and why.
	Reason string `json:"reason,omitempty"`
}

// Provenance is the record of what produced a job's result: its inputs,
// the image, the metrics, the gate's verdict, the pushes, and the times.
// gantry inspect shows it; gantry pushes it beside the image.
type Provenance struct {
	Job           string `json:"job"`
	GantryVersion string `json:"gantry_version"`
	Dockerfile    string `json:"dockerfile"`
	// BuildArgs are the build arguments with their values (--provenance
	// max, the default); with min, BuildArgNames names them and BuildArgs
	// is empty. BuildSecrets are the build secrets' IDs (never values).
	BuildArgs     map[string]string `json:"build_args,omitempty"`
	BuildArgNames []string          `json:"build_arg_names,omitempty"`
	BuildSecrets  []string          `json:"build_secrets,omitempty"`
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
	// Reason says why, naming the metric with both values ("promoted:
	// accuracy 0.9667 > 0.9333", "kept champion: loss 0.3000 >= 0.2500").
	Reason string `json:"reason"`
}

// NewProvenance returns the provenance of j as it stands.
func NewProvenance(j *Job) *Provenance {
	reason := ""
	if !j.GatePassed {
		reason = j.Error
	}
	p := &Provenance{
		Job:           j.ID,
		GantryVersion: Version,
		Dockerfile:    j.Spec.Build.Dockerfile,
		BuildArgs:     j.Spec.Build.BuildArgs,
		Target:        j.Spec.Build.Target,
		Inputs:        j.Inputs,
		Image:         j.Image,
		Pushes:        j.Pushes,
		Metrics:       j.Metrics,
		Gate:          Gate{MinAccuracy: j.Spec.MinAccuracy, Conditions: j.Spec.Conditions(), Passed: j.GatePassed, Reason: reason},
		ExitCode:      j.ExitCode,
		Times:         j.Times,
		Run:           j.Spec.Run,
		Outputs:       j.Outputs,
		BuildSecrets:  j.Spec.Build.Secrets,
	}
	if j.Spec.Build.Provenance == ProvenanceMin {
		p.BuildArgs, p.BuildArgNames = nil, slices.Sorted(maps.Keys(j.Spec.Build.BuildArgs))
	}
	return p
}

// Judge is the gate's verdict on a job that trained with exit 0 and
// reported metrics m: it passes when every condition of s holds (see
// Spec.Conditions), and none when it has none. A condition on a metric the
// job never reported fails, saying so. The reason names each condition
// that failed.
func Judge(s *Spec, m Metrics) Gate {
	g := Gate{MinAccuracy: s.MinAccuracy, Conditions: s.Conditions(), Passed: true}
	var why []string
	for _, c := range g.Conditions {
		if r := failure(c, m); r != "" {
			why = append(why, r)
		}
	}
	if len(why) > 0 {
		g.Passed, g.Reason = false, strings.Join(why, "; ")
	}
	return g
}

// failure says why condition c does not hold for m, or "" when it does.
func failure(c Condition, m Metrics) string {
	v, ok := m.Value(c.Metric)
	switch {
	case !ok && c.Metric == "accuracy" && m.AccuracyError != "":
		return fmt.Sprintf("the gate needs %s, but %s", c, m.AccuracyError)
	case !ok:
		return fmt.Sprintf("the gate needs %s, but the job reported no %s", c, c.Metric)
	case c.Holds(v):
		return ""
	}
	rel := map[string]string{">=": "below", ">": "not above", "<=": "above", "<": "not below"}[c.Op]
	return fmt.Sprintf("%s %s is %s the gate %s", c.Metric, FormatValue(v), rel, c)
}

// FormatValue writes a metric's value as gantry shows it: four decimals
// (0.9667), or four significant digits for a value too small or too large
// for them to say much (1.234e-05).
func FormatValue(v float64) string {
	if a := math.Abs(v); a != 0 && (a < 0.01 || a >= 1e6) {
		return fmt.Sprintf("%.4g", v)
	}
	return fmt.Sprintf("%.4f", v)
}

// Decide says whether a candidate's value of the objective o's metric beats
// the champion's, in o's direction, by at least minImprovement (strictly,
// when it is 0), and why. champion is nil when the tag holds no image with
// a value of the metric; then the candidate wins.
func Decide(tag string, o Objective, candidate float64, champion *float64, minImprovement float64) Promotion {
	p := Promotion{Tag: tag}
	if champion == nil {
		p.Promoted = true
		p.Reason = "promoted: the tag held no image with a provenance record"
		return p
	}
	better, worse := ">", "<="
	if !o.Max {
		better, worse = "<", ">="
	}
	cand, champ := FormatValue(candidate), FormatValue(*champion)
	switch gain := o.Gain(candidate, *champion); {
	case gain > 0 && gain >= minImprovement-slack(candidate, *champion):
		p.Promoted = true
		p.Reason = fmt.Sprintf("promoted: %s %s %s %s", o.Metric, cand, better, champ)
	case gain > 0:
		p.Reason = fmt.Sprintf("kept champion: %s %s beats %s by less than %g", o.Metric, cand, champ, minImprovement)
	default:
		p.Reason = fmt.Sprintf("kept champion: %s %s %s %s", o.Metric, cand, worse, champ)
	}
	return p
}

// slack is the rounding error of a difference of a and b: 0.95 beats 0.90
// by 0.05, though in binary it is 0.04999999999999993.
func slack(a, b float64) float64 {
	return 1e-9 * math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// HistoryEntry is one job that pushed to an image name, as gantry history
// shows it.
type HistoryEntry struct {
	Job      string    `json:"job"`
	Created  time.Time `json:"created"`
	State    State     `json:"state"`
	Accuracy *float64  `json:"accuracy,omitempty"`
	// Metric is the metric the job promoted on, when not accuracy, and
	// Value the job's final value of it (nil when it reported none).
	Metric string   `json:"metric,omitempty"`
	Value  *float64 `json:"value,omitempty"`
	// Digest is what the job pushed to the name's repository.
	Digest string `json:"digest,omitempty"`
	// Champion is set when the tag asked about holds the job's image now.
	Champion bool   `json:"champion"`
	Reason   string `json:"reason,omitempty"`
}
