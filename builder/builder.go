// Package builder builds a job's image with BuildKit's dockerfile frontend.
// It talks either to the Docker engine's embedded BuildKit (through the
// engine's /grpc and /session endpoints, the way buildx's "docker" driver
// does) or to a standalone buildkitd at an address.
package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"

	"github.com/gantry-ml/gantry"
)

// HijackFunc opens a hijacked connection to one of the engine's endpoints
// ("/grpc" or "/session"); the Docker client's DialHijack has this shape.
type HijackFunc func(ctx context.Context, url, proto string, meta map[string][]string) (net.Conn, error)

// LoadFunc loads an image tarball (docker save format) into the engine.
type LoadFunc func(ctx context.Context, r io.Reader) error

// Builder builds images. It is safe for concurrent use.
type Builder struct {
	c *client.Client
	// load is set for a standalone buildkitd: the image comes back as a
	// tarball and is loaded into the engine. With the embedded BuildKit the
	// "moby" exporter writes straight into the engine's image store.
	load LoadFunc
}

// Dial connects to BuildKit. With addr empty it uses the engine's embedded
// BuildKit through hijack; otherwise addr names a standalone buildkitd
// (unix://, tcp://, docker-container://...) and load brings the images it
// builds into the engine (a Request with Stage pushes instead). A tcp://
// buildkitd needs tls: mutual TLS, since whoever reaches it unauthenticated
// runs anything as its user (root). It returns ErrInvalid for tcp:// without
// tls or an unreadable TLS file, and ErrUnavailable when BuildKit does not
// answer.
func Dial(ctx context.Context, addr string, tls TLS, hijack HijackFunc, load LoadFunc) (*Builder, error) {
	var opts []client.ClientOpt
	if addr == "" {
		opts = []client.ClientOpt{
			client.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return hijack(ctx, "/grpc", "h2c", nil)
			}),
			client.WithSessionDialer(func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
				return hijack(ctx, "/session", proto, meta)
			})}
		load = nil
	} else {
		var err error
		if opts, err = tls.clientOpts(addr); err != nil {
			return nil, err
		}
	}
	c, err := client.New(ctx, addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("buildkit: %w", errors.Join(gantry.ErrUnavailable, err))
	}
	b := &Builder{c: c, load: load}
	// Docker 20.10's BuildKit lacks Info(); ListWorkers answers everywhere.
	if _, err := c.ListWorkers(ctx); err != nil {
		c.Close()
		where := "the Docker engine's embedded BuildKit"
		if addr != "" {
			where = "buildkitd at " + addr
		}
		return nil, gantry.Errorf(gantry.ErrUnavailable, "buildkit: %s does not answer: %v", where, err)
	}
	return b, nil
}

// Close closes the connection to BuildKit.
func (b *Builder) Close() error { return b.c.Close() }

// Request is one build.
type Request struct {
	// ContextDir is the build context, already unpacked on local disk.
	ContextDir string
	Spec       gantry.BuildSpec
	// Name is the name the image gets in the engine's image store. It is
	// not used with Stage.
	Name string
	// Stage, when set, is a repository ("10.77.0.1:5000/gantry/staging")
	// the image is pushed to by digest, untagged, in place of going into
	// the engine: for nodes that pull it. Result.ImageID is then
	// STAGE@sha256:....
	Stage string
	// CacheRef, when set, is a registry reference the build's cache is
	// imported from and exported to (every step, mode=max), so that a
	// fresh buildkitd reuses what an earlier one built. The engine's
	// embedded BuildKit cannot export a registry cache.
	CacheRef string
	// Labels are set on the image.
	Labels map[string]string
	// Secrets are the values of the build secrets (RUN
	// --mount=type=secret,id=ID), by ID: BuildKit asks the build's session
	// for them; they are in no image, cache key or status.
	Secrets map[string][]byte
	// Status, when set, receives BuildKit's status updates as JSON lines
	// (client.SolveStatus), from which BuildKit's own displays can be
	// drawn again later (gantry watch does).
	Status io.Writer
}

// Result is what a build made.
type Result struct {
	// ImageID is the engine's ID of the image, or with Request.Stage the
	// reference nodes pull: STAGE@DIGEST.
	ImageID string
	// Digest is the pushed manifest's digest (what the registry answers as
	// Docker-Content-Digest), with Request.Stage; else empty.
	Digest string
	// Bases are the images the Dockerfile's FROM lines named, as BuildKit
	// resolved them ("docker.io/library/python:3.11"), in order.
	Bases []string
}

// Build builds r and returns what it made. BuildKit's progress, in its plain
// form, goes to progress as it happens. A failed build returns an error that
// names the failing step and BuildKit's own message.
func (b *Builder) Build(ctx context.Context, r Request, progress io.Writer) (Result, error) {
	opt, err := solveOpt(r)
	if err != nil {
		return Result{}, err
	}
	eg, ectx := errgroup.WithContext(ctx)
	loadDone, closeLoad := b.export(ectx, &opt, r)
	defer closeLoad()
	ch := make(chan *client.SolveStatus)
	seen := &observer{}
	var resp *client.SolveResponse
	eg.Go(func() error {
		var err error
		resp, err = b.c.Solve(ectx, nil, opt, ch) // Solve closes ch
		return err
	})
	eg.Go(func() error { return display(ectx, ch, progress, r.Status, seen) })
	if err := eg.Wait(); err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return Result{}, seen.wrap(err)
	}
	if loadDone != nil {
		if err := <-loadDone; err != nil {
			return Result{}, fmt.Errorf("load image into the engine: %w", err)
		}
	}
	return result(r, resp, seen.bases())
}

// result reads what the exporter made from its response.
func result(r Request, resp *client.SolveResponse, bases []string) (Result, error) {
	if r.Stage != "" {
		dgst := resp.ExporterResponse[exptypes.ExporterImageDigestKey]
		if dgst == "" {
			return Result{}, fmt.Errorf("build: buildkit returned no digest for the image pushed to %s", r.Stage)
		}
		return Result{ImageID: r.Stage + "@" + dgst, Digest: dgst, Bases: bases}, nil
	}
	id := resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey]
	if id == "" {
		id = resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	}
	if id == "" {
		return Result{}, fmt.Errorf("build: buildkit returned no image ID")
	}
	return Result{ImageID: id, Bases: bases}, nil
}

// solveOpt is the solve that builds r with the Dockerfile frontend.
func solveOpt(r Request) (client.SolveOpt, error) {
	ctxFS, err := fsutil.NewFS(r.ContextDir)
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("build context: %w", err)
	}
	dockerfile := r.Spec.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	dfFS, err := fsutil.NewFS(path.Join(r.ContextDir, path.Dir(dockerfile)))
	if err != nil {
		return client.SolveOpt{}, fmt.Errorf("dockerfile directory: %w", err)
	}
	attrs := map[string]string{"filename": path.Base(dockerfile)}
	if r.Spec.Target != "" {
		attrs["target"] = r.Spec.Target
	}
	for k, v := range r.Spec.BuildArgs {
		attrs["build-arg:"+k] = v
	}
	for k, v := range r.Labels {
		attrs["label:"+k] = v
	}
	auth, err := registryAuth()
	if err != nil {
		return client.SolveOpt{}, err
	}
	opt := client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
		Session:       []session.Attachable{auth, secretsAttachable(r.Secrets)},
	}
	if r.CacheRef != "" {
		opt.CacheImports = []client.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{"ref": r.CacheRef}}}
		opt.CacheExports = []client.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{"ref": r.CacheRef, "mode": "max"}}}
	}
	return opt, nil
}

// export sets where the image goes: pushed by digest to r.Stage; into the
// engine's store by name (the engine's own BuildKit); or loaded into the
// engine as a docker tarball (a standalone buildkitd). loadDone, when not
// nil, says how the load ended; closeLoad ends the tarball once the solve
// is done.
func (b *Builder) export(ctx context.Context, opt *client.SolveOpt, r Request) (loadDone chan error, closeLoad func()) {
	name := r.Name
	if r.Stage != "" {
		opt.Exports = []client.ExportEntry{{Type: client.ExporterImage, Attrs: map[string]string{
			"name": r.Stage, "push": "true", "push-by-digest": "true",
		}}}
		return nil, func() {}
	}
	if b.load == nil {
		opt.Exports = []client.ExportEntry{{Type: "moby", Attrs: map[string]string{"name": name}}}
		return nil, func() {}
	}
	pr, pw := io.Pipe()
	loadDone = make(chan error, 1)
	go func() {
		err := b.load(ctx, pr)
		pr.CloseWithError(err)
		loadDone <- err
	}()
	opt.Exports = []client.ExportEntry{{
		Type:   client.ExporterDocker,
		Attrs:  map[string]string{"name": name},
		Output: func(map[string]string) (io.WriteCloser, error) { return pw, nil },
	}}
	return loadDone, func() { pw.Close() }
}

// display draws BuildKit's status updates as plain progress, writes them
// to status as JSON lines, and lets seen observe them, until ch closes.
func display(ctx context.Context, ch chan *client.SolveStatus, progress, status io.Writer, seen *observer) error {
	d, err := progressui.NewDisplay(progress, progressui.PlainMode)
	if err != nil {
		for range ch {
		}
		return err
	}
	tee := make(chan *client.SolveStatus)
	go func() {
		defer close(tee)
		enc := json.NewEncoder(io.Discard)
		if status != nil {
			enc = json.NewEncoder(status)
		}
		for s := range ch {
			seen.observe(s)
			enc.Encode(s)
			tee <- s
		}
	}()
	_, err = d.UpdateFrom(context.WithoutCancel(ctx), tee)
	return err
}

// observer reads a build's status as it comes: the name of the first
// vertex that reported an error, which is the Dockerfile step ("[3/5] RUN
// make") the user needs to see, and the base images the FROM steps named.
type observer struct {
	mu    sync.Mutex
	name  string
	msg   string
	froms []string
}

// fromStep matches BuildKit's name of a Dockerfile FROM step:
// "[2/5] FROM docker.io/library/python:3.10-slim@sha256:..." or
// "[stage-1 1/3] FROM ...".
var fromStep = regexp.MustCompile(`^\[[^\]]*\] FROM (\S+)`)

func (f *observer) observe(s *client.SolveStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range s.Vertexes {
		if v.Error != "" && f.name == "" && !strings.Contains(v.Error, context.Canceled.Error()) {
			f.name, f.msg = v.Name, v.Error
		}
		if m := fromStep.FindStringSubmatch(v.Name); m != nil && !slices.Contains(f.froms, m[1]) {
			f.froms = append(f.froms, m[1])
		}
	}
}

func (f *observer) bases() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.froms)
}

func (f *observer) wrap(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.name == "" {
		return fmt.Errorf("build failed: %w", err)
	}
	return fmt.Errorf("build failed at step %s: %w", f.name, err)
}
