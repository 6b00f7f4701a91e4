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
	"strings"
	"sync"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
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
// (unix://, tcp://, docker-container://...) and load brings its images into
// the engine. It returns ErrUnavailable when BuildKit does not answer.
func Dial(ctx context.Context, addr string, hijack HijackFunc, load LoadFunc) (*Builder, error) {
	var (
		c   *client.Client
		err error
	)
	if addr == "" {
		c, err = client.New(ctx, "",
			client.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return hijack(ctx, "/grpc", "h2c", nil)
			}),
			client.WithSessionDialer(func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
				return hijack(ctx, "/session", proto, meta)
			}))
		load = nil
	} else {
		c, err = client.New(ctx, addr)
	}
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
	// Name is the name the image gets in the engine's image store.
	Name string
	// Labels are set on the image.
	Labels map[string]string
	// Status, when set, receives BuildKit's status updates as JSON lines
	// (client.SolveStatus), from which BuildKit's own displays can be
	// drawn again later (gantry watch does).
	Status io.Writer
}

// Build builds r and returns the engine's image ID. BuildKit's progress, in
// its plain form, goes to progress as it happens. A failed build returns an
// error that names the failing step and BuildKit's own message.
func (b *Builder) Build(ctx context.Context, r Request, progress io.Writer) (string, error) {
	ctxFS, err := fsutil.NewFS(r.ContextDir)
	if err != nil {
		return "", fmt.Errorf("build context: %w", err)
	}
	dockerfile := r.Spec.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	dfFS, err := fsutil.NewFS(path.Join(r.ContextDir, path.Dir(dockerfile)))
	if err != nil {
		return "", fmt.Errorf("dockerfile directory: %w", err)
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
	opt := client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
	}

	eg, ectx := errgroup.WithContext(ctx)
	var loadDone chan error
	if b.load == nil {
		opt.Exports = []client.ExportEntry{{Type: "moby", Attrs: map[string]string{"name": r.Name}}}
	} else {
		pr, pw := io.Pipe()
		loadDone = make(chan error, 1)
		go func() {
			err := b.load(ectx, pr)
			pr.CloseWithError(err)
			loadDone <- err
		}()
		opt.Exports = []client.ExportEntry{{
			Type:   client.ExporterDocker,
			Attrs:  map[string]string{"name": r.Name},
			Output: func(map[string]string) (io.WriteCloser, error) { return pw, nil },
		}}
		defer pw.Close()
	}

	ch := make(chan *client.SolveStatus)
	failed := &failedStep{}
	var resp *client.SolveResponse
	eg.Go(func() error {
		var err error
		resp, err = b.c.Solve(ectx, nil, opt, ch) // Solve closes ch
		return err
	})
	eg.Go(func() error {
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
			if r.Status != nil {
				enc = json.NewEncoder(r.Status)
			}
			for s := range ch {
				failed.observe(s)
				enc.Encode(s)
				tee <- s
			}
		}()
		_, err = d.UpdateFrom(context.WithoutCancel(ectx), tee)
		return err
	})
	if err := eg.Wait(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", failed.wrap(err)
	}
	if loadDone != nil {
		if err := <-loadDone; err != nil {
			return "", fmt.Errorf("load image into the engine: %w", err)
		}
	}
	id := resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey]
	if id == "" {
		id = resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	}
	if id == "" {
		return "", fmt.Errorf("build: buildkit returned no image ID")
	}
	return id, nil
}

// failedStep remembers the name of the first vertex that reported an error,
// which is the Dockerfile step ("[3/5] RUN make") the user needs to see.
type failedStep struct {
	mu   sync.Mutex
	name string
	msg  string
}

func (f *failedStep) observe(s *client.SolveStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range s.Vertexes {
		if v.Error != "" && f.name == "" && !strings.Contains(v.Error, context.Canceled.Error()) {
			f.name, f.msg = v.Name, v.Error
		}
	}
}

func (f *failedStep) wrap(err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.name == "" {
		return fmt.Errorf("build failed: %w", err)
	}
	return fmt.Errorf("build failed at step %s: %w", f.name, err)
}
