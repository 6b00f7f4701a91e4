// Package push publishes a job's image to registries with
// go-containerregistry, using the user's Docker credentials (config.json and
// credential helpers), and reports the digest each registry serves.
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gantry-ml/gantry"
)

// ParseRef checks that s is a reference an image can be pushed to: a tag
// (":latest" when none is given), not a digest. It returns ErrInvalid.
func ParseRef(s string) (name.Tag, error) {
	t, err := name.NewTag(s, name.StrictValidation)
	if err != nil {
		// StrictValidation refuses a missing tag; a user means ":latest".
		if t2, err2 := name.NewTag(s); err2 == nil {
			return t2, nil
		}
		return name.Tag{}, gantry.Errorf(gantry.ErrInvalid, "%q is not an image reference to push to (want REGISTRY/NAME[:TAG]): %v", s, err)
	}
	return t, nil
}

// Pusher pushes images. The zero value is not usable; use New.
type Pusher struct {
	keychain  authn.Keychain
	transport http.RoundTripper
}

// Option configures a Pusher.
type Option func(*Pusher)

// WithKeychain replaces the Docker configuration keychain (for tests).
func WithKeychain(k authn.Keychain) Option { return func(p *Pusher) { p.keychain = k } }

// WithTransport replaces the HTTP transport (for tests against an
// in-process registry).
func WithTransport(t http.RoundTripper) Option { return func(p *Pusher) { p.transport = t } }

// New returns a Pusher that reads credentials the way the docker CLI does.
func New(opts ...Option) *Pusher {
	p := &Pusher{keychain: authn.DefaultKeychain, transport: remote.DefaultTransport}
	for _, o := range opts {
		o(p)
	}
	return p
}

// FromEngine returns the local image ref (a name or ID) as the engine holds
// it, read through docker save. c is the engine's API client.
func FromEngine(ctx context.Context, c daemon.Client, ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "local image %q: %v", ref, err)
	}
	img, err := daemon.Image(r, daemon.WithClient(c), daemon.WithContext(ctx), daemon.WithFileBufferedOpener())
	if err != nil {
		return nil, fmt.Errorf("read image %s from the engine: %w", ref, err)
	}
	return img, nil
}

// Push uploads img to every reference in refs (blobs shared between them are
// sent once) and returns, for each, the manifest digest the registry serves
// for it afterwards. Progress lines go to progress. An error names the
// registry that refused and why; authentication errors say so.
func (p *Pusher) Push(ctx context.Context, img v1.Image, refs []string, progress io.Writer) ([]gantry.Push, error) {
	todo := map[name.Reference]remote.Taggable{}
	tags := make([]name.Tag, 0, len(refs))
	for _, r := range refs {
		t, err := ParseRef(r)
		if err != nil {
			return nil, err
		}
		todo[t] = img
		tags = append(tags, t)
	}
	if len(todo) == 0 {
		return nil, nil
	}
	updates := make(chan v1.Update, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		report(progress, updates)
	}()
	opts := p.options(ctx)
	err := remote.MultiWrite(todo, append(opts, remote.WithProgress(updates))...)
	<-done // MultiWrite closes updates
	if err != nil {
		return nil, describe(tags, err)
	}
	out := make([]gantry.Push, 0, len(tags))
	for _, t := range tags {
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		d, err := remote.Head(t, append(p.options(hctx), remote.WithContext(hctx))...)
		cancel()
		if err != nil {
			return nil, describe([]name.Tag{t}, err)
		}
		out = append(out, gantry.Push{Ref: t.Name(), Digest: d.Digest.String()})
		fmt.Fprintf(progress, "pushed %s@%s\n", t.Name(), d.Digest)
	}
	return out, nil
}

func (p *Pusher) options(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(p.keychain),
		remote.WithTransport(p.transport),
		remote.WithJobs(4),
	}
}

// report writes a progress line at most every two seconds, and the last one.
func report(w io.Writer, updates <-chan v1.Update) {
	var last time.Time
	var u v1.Update
	for u = range updates {
		if u.Error != nil {
			continue
		}
		if time.Since(last) >= 2*time.Second {
			last = time.Now()
			fmt.Fprintf(w, "pushing: %s of %s\n", size(u.Complete), size(u.Total))
		}
	}
	if u.Total > 0 {
		fmt.Fprintf(w, "pushing: %s of %s\n", size(u.Complete), size(u.Total))
	}
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// describe turns a registry error into one a user can act on, naming the
// registries involved.
func describe(tags []name.Tag, err error) error {
	regs := map[string]bool{}
	for _, t := range tags {
		regs[t.RegistryStr()] = true
	}
	names := make([]string, 0, len(regs))
	for r := range regs {
		names = append(names, r)
	}
	sort.Strings(names)
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("push: registry %v refused the credentials (run docker login for it): %w", names, err)
	}
	return fmt.Errorf("push to %v: %w", names, err)
}
