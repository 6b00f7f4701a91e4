// Package daemon is where gantry's parts meet: the store, the builder, the
// engine and the registry client are wired together here, and nowhere else.
// Read it in the order a job lives:
//
//   - service.go: what the API calls; Submit checks a spec against the
//     operator's policy, unpacks the context (buildctx.go, fetch.go) and
//     records the job.
//   - scheduler.go: queued jobs start, oldest first, while slots are free.
//   - run.go: one run of one job, as named steps, each ending at a
//     checkpoint recorded before the next side effect: built, container
//     created, exited, gated, published.
//   - inputs.go, datasets.go: what the training container is given: its
//     environment (--secret-env's values held in memory only, until the
//     container is created) and its datasets (checked against the policy at
//     submit, pinned by the digest of their trees before the container is
//     created).
//   - train.go: the training container, its output and its metrics;
//     metrics.go: the metric series, kept beside the record.
//   - outputs.go: what training left in its output directory, copied out
//     before the exit is recorded and kept by content.
//   - publish.go: the one path to the registry, for a job and for gantry
//     push: references, job tags, provenance, the champion rule.
//   - sweep.go, sweeprun.go: a sweep, a grid of jobs over one spec: its
//     context unpacked once, its image built once (the first point to
//     build builds, the others wait), the winner chosen once every point
//     has ended, recorded, then alone published.
//   - recovery.go, janitor.go: what a restart finds, and what is cleaned up.
//   - logs.go, events.go: what followers of a job read.
//   - webhooks.go: the messages a job's end sends, from the outbox the
//     store fills in the transaction of the end, signed and retried until
//     delivered; webhooks_guard.go: what a job's URL may reach.
//
// Because every step commits its outcome before the next starts, a gantryd
// killed at any moment finds, when it starts again, enough in the record to
// go on from where the job was: a build is run again, a training container
// is re-attached (its log replayed from the start, the job log cut back to
// where training began), a push is redone.
package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/internal/keyed"
	"github.com/gantry-ml/gantry/internal/treesum"
	"github.com/gantry-ml/gantry/runner"
)

// The subsets of the outside systems the pipeline uses, declared here where
// they are used; cmd/gantryd wires the real ones, tests may wire others.
type (
	jobStore interface {
		Create(ctx context.Context, j *gantry.Job) error
		Get(ctx context.Context, id string) (*gantry.Job, error)
		Update(ctx context.Context, id string, fn func(*gantry.Job) error) (*gantry.Job, error)
		List(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error)
		Unfinished(ctx context.Context) ([]*gantry.Job, error)
		Events(ctx context.Context, after uint64, job string, limit int) ([]gantry.Event, error)
		LastEvent(ctx context.Context) (uint64, error)
		// A sweep is created with its points' jobs, in one transaction.
		CreateSweep(ctx context.Context, sw *gantry.Sweep, jobs []*gantry.Job) error
		GetSweep(ctx context.Context, id string) (*gantry.Sweep, error)
		UpdateSweep(ctx context.Context, id string, fn func(*gantry.Sweep) error) (*gantry.Sweep, error)
		ListSweeps(ctx context.Context, limit int, unfinished bool) ([]*gantry.Sweep, error)
		// The webhook outbox, which Update fills when a job ends.
		outbox
	}
	imageBuilder interface {
		Build(ctx context.Context, r builder.Request, progress io.Writer) (builder.Result, error)
	}
	// images is the subset of the local engine that keeps built images.
	// A backend whose images live in a registry (swarm) has none locally:
	// ImageID says ErrNotFound and RemoveImage removes nothing.
	images interface {
		ImageID(ctx context.Context, ref string) (string, error)
		RemoveImage(ctx context.Context, ref string) error
	}
	imagePusher interface {
		Push(ctx context.Context, img v1.Image, refs []string, rep gantry.Reporter) ([]gantry.Push, error)
		// Attach pushes data as an artifact whose subject is the manifest
		// digest subject in ref's repository; Attached reads it back.
		Attach(ctx context.Context, ref, subject, mediaType string, data []byte) (string, error)
		Attached(ctx context.Context, ref, subject, mediaType string) ([]byte, error)
		// AttachFiles pushes files (by path) as one artifact of
		// artifactType whose subject is the manifest digest subject.
		AttachFiles(ctx context.Context, ref, subject, artifactType string, files map[string]v1.Layer) (string, error)
		Resolve(ctx context.Context, ref string) (string, error)
		Tag(ctx context.Context, ref, digest string) error
		// Upload sends an image's blobs, not its manifest: it publishes
		// nothing.
		Upload(ctx context.Context, img v1.Image, refs []string) error
	}
	// imageSource reads a local image (by name) for pushing. An image that
	// is an io.Closer holds something (a file) until it is closed.
	imageSource func(ctx context.Context, ref string) (v1.Image, error)
)

// Engine is what the daemon needs of where training runs: a backend
// (runner.Backend: the local engine, runner.Engine, or a swarm) and the
// images it keeps.
type Engine interface {
	runner.Backend
	images
}

// Config is the daemon's configuration.
type Config struct {
	// DataDir holds the logs and the unpacked build contexts.
	DataDir string
	// Instance is the data file's instance ID; containers carry it.
	Instance string
	// MaxJobs is how many jobs run at once.
	MaxJobs int
	// Policy bounds what a job may ask; its limits are the defaults of
	// jobs that ask nothing.
	Policy gantry.Policy
	// StopTimeout is the grace period between SIGTERM and SIGKILL when a
	// training container is stopped.
	StopTimeout time.Duration
	// Stage is the staging repository: where the built image goes, by
	// digest, for a backend's nodes to pull it (gantryd --staging-repo).
	// With BuildStages (a standalone buildkitd) the build pushes it there
	// itself; else the built image is pushed from the engine.
	Stage       string
	BuildStages bool
	// OrphanGrace is how long a container that carries this daemon's label
	// but belongs to no job is left before it is removed.
	OrphanGrace time.Duration
	// BuildCache, when set, is the registry reference builds import their
	// cache from and export it to (builder.Request.CacheRef).
	BuildCache string
	Logger     *slog.Logger

	// Prune, when set, is called each time a job ends, from the goroutine
	// that ran it, once the job has let go of its image: it brings the
	// blob cache back within its bounds (blobs.Cache.Prune) and returns
	// the bytes it freed. An image read never prunes.
	Prune func() (int64, error)

	// Webhooks is how messages are sent when jobs end.
	Webhooks WebhookConfig
	// Retention is what finished jobs gantryd keeps, and Cleaner the
	// engine whose images and build cache a prune trims (nil: it trims
	// neither).
	Retention Retention
	Cleaner   ImageCleaner
}

// Daemon runs jobs.
type Daemon struct {
	cfg     Config
	store   jobStore
	builder imageBuilder
	engine  Engine
	pusher  imagePusher
	source  imageSource
	log     *slog.Logger
	now     func() time.Time

	wake    chan struct{}
	changed *broadcaster
	// written wakes the followers of a job's log or build status when
	// it is written.
	written fileNotifier
	// onTailRead, when set (by tests), is called before each read of a
	// followed file.
	onTailRead func(path string)
	mu         sync.Mutex
	active     map[string]context.CancelCauseFunc // jobs this process runs
	// queued holds the context size of each job waiting for a slot, for
	// the queue's bounds; queuedBytes is their sum.
	queued      map[string]int64
	queuedBytes int64
	// fetch is what a build's ADD may fetch from.
	fetch fetchRule
	// tagLocks serialize promotions of each tag.
	tagLocks keyed.Mutex[string]
	// sweepLocks serialize the settling of each sweep; sweepBuilds are the
	// sweeps' builds under way (d.mu).
	sweepLocks  keyed.Mutex[string]
	sweepBuilds map[string]*sharedBuild
	wg          sync.WaitGroup

	// secrets holds jobs' --secret-env values until their containers are
	// created, in memory only.
	secrets secretStore
	// buildSecrets holds build secrets' values until the build used them,
	// in memory only (buildsecrets.go).
	buildSecrets buildSecretStore
	// digests caches the digests of dataset files across jobs; givenRoots
	// are the --dataset-root directories as the operator wrote them (the
	// policy holds their real paths).
	digests    *treesum.Cache
	givenRoots []string

	// hooks delivers the webhook outbox.
	hooks *hookSender
	// pruning serializes prunes (retention.go); outputs is held for
	// reading from when a job keeps outputs until its record lists them,
	// and for writing while a prune removes outputs.
	pruning  sync.Mutex
	outputs  sync.RWMutex
	retained retainClock
}

// New returns a daemon; Prepare and Run start its work.
func New(cfg Config, st jobStore, b imageBuilder, e Engine, p imagePusher, src imageSource) (*Daemon, error) {
	if cfg.MaxJobs < 1 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "max jobs %d: must be at least 1", cfg.MaxJobs)
	}
	if err := cfg.Policy.Check(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = time.Minute
	}
	if cfg.Policy.Resources.LogBytes <= 0 {
		cfg.Policy.Resources.LogBytes = 256 << 20
	}
	if cfg.Policy.ContextEntries <= 0 {
		cfg.Policy.ContextEntries = 100000
	}
	given := cfg.Policy.DatasetRoots
	roots, err := resolveDatasetRoots(given)
	if err != nil {
		return nil, err
	}
	cfg.Policy.DatasetRoots = roots
	for _, d := range []string{"logs", "contexts", "metrics"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	cfg.Policy.Webhooks = len(cfg.Webhooks.Key) > 0
	changed := &broadcaster{}
	d := &Daemon{
		cfg: cfg, store: &notifyingStore{jobStore: st, changed: changed},
		builder: b, engine: e, pusher: p, source: src,
		log: cfg.Logger, now: time.Now,
		wake:        make(chan struct{}, 1),
		changed:     changed,
		active:      map[string]context.CancelCauseFunc{},
		queued:      map[string]int64{},
		sweepBuilds: map[string]*sharedBuild{},
		fetch:       fetchRule{allowPrivate: cfg.Policy.BuildPrivateFetch, resolve: lookupNetIP},
		digests:     treesum.NewCache(filepath.Join(cfg.DataDir, "dataset-digests.json")),
		givenRoots:  given,
	}
	d.hooks = newHookSender(cfg.Webhooks, cfg.Policy.WebhookPrivate, st)
	return d, nil
}

// Policy returns the operator's policy: what a job may ask.
func (d *Daemon) Policy() gantry.Policy { return d.cfg.Policy }
