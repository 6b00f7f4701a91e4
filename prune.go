package gantry

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// EventRemoved is the event of a job whose record a prune removed (Job
// names it); the job's earlier events are removed with it.
const EventRemoved = "removed"

// PruneOptions say what a prune (gantry prune, POST /v1/prune) removes:
// finished jobs that finished more than OlderThan ago and are not among the
// newest Keep finished jobs of their image name. Jobs that hold a promoted
// tag, jobs not finished, and the points of sweeps are always kept.
type PruneOptions struct {
	// OlderThan: only jobs that finished more than this long ago go (0:
	// any finished job); nil takes gantryd's --retain.
	OlderThan *Duration `json:"older_than,omitempty"`
	// Keep is how many of the newest finished jobs of each image name
	// (Job.Name) stay; nil takes gantryd's --retain-per-image.
	Keep *int `json:"keep,omitempty"`
	// DryRun lists what would be removed, and removes nothing.
	DryRun bool `json:"dry_run,omitempty"`
}

// PruneReport is what a prune removed (or, with DryRun, would remove).
type PruneReport struct {
	DryRun bool `json:"dry_run"`
	// OlderThan and Keep are the bounds the prune applied.
	OlderThan Duration      `json:"older_than"`
	Keep      int           `json:"keep"`
	Jobs      []PrunedJob   `json:"jobs"`
	Files     []PrunedFile  `json:"files"`
	Images    []PrunedImage `json:"images"`
	// BuildCache is what pruning the engine's build cache down to its
	// bound freed (not known ahead of a dry run).
	BuildCache int64 `json:"build_cache_bytes"`
	// Bytes is the total: files, images and build cache.
	Bytes int64 `json:"bytes"`
	// Kept is how many finished jobs stay.
	Kept int `json:"kept"`
	// Problems name what could not be removed, and why (a job whose
	// image a container uses stays, with its record).
	Problems []string `json:"problems,omitempty"`
}

// PrunedJob is a job a prune removed.
type PrunedJob struct {
	ID       string     `json:"id"`
	Name     string     `json:"name,omitempty"`
	State    State      `json:"state"`
	Finished *time.Time `json:"finished,omitempty"`
}

// PrunedFile is a file (or directory) of the data dir a prune removed; Job
// is "" for a kept output that no remaining job references.
type PrunedFile struct {
	Path  string `json:"path"`
	Job   string `json:"job,omitempty"`
	Bytes int64  `json:"bytes"`
}

// PrunedImage is an engine image a prune removed. Bytes is what the engine
// counts as its own (layers no other image shares): what its removal
// freed; 0 when only the name went (another name holds the image).
type PrunedImage struct {
	Ref   string `json:"ref"`
	ID    string `json:"id,omitempty"`
	Job   string `json:"job"`
	Bytes int64  `json:"bytes"`
}

// ParseAge reads an age as time.ParseDuration does, with days too ("30d",
// "1d12h"). It returns ErrInvalid for anything else or a negative age.
func ParseAge(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	var days int64
	if i := strings.IndexByte(t, 'd'); i > 0 {
		n, err := strconv.ParseInt(t[:i], 10, 32)
		if err != nil {
			return 0, Errorf(ErrInvalid, "age %q: want a duration like 30d, 12h or 1d12h", s)
		}
		days, t = n, t[i+1:]
	}
	var rest time.Duration
	if t != "" {
		var err error
		if rest, err = time.ParseDuration(t); err != nil {
			return 0, Errorf(ErrInvalid, "age %q: want a duration like 30d, 12h or 1d12h", s)
		}
	}
	d := time.Duration(days)*24*time.Hour + rest
	if days < 0 || rest < 0 || d < 0 {
		return 0, Errorf(ErrInvalid, "age %q: must not be negative", s)
	}
	return d, nil
}

// FormatAge writes d as ParseAge reads it, in whole days when it is.
func FormatAge(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
