// Package registry is gantry's registry client: it publishes a job's image
// to registries with go-containerregistry, using the user's Docker
// credentials (config.json and credential helpers), and reports the digest
// each registry serves. It uploads blobs ahead of a push, attaches and reads
// artifacts, resolves and moves tags, and speaks plain HTTP only to loopback
// registries and those the operator lists.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/gantry-ml/gantry"
)

// Pusher pushes images. The zero value is not usable; use New.
type Pusher struct {
	keychain  authn.Keychain
	transport http.RoundTripper
	// insecure holds the registries, besides loopback ones, that may be
	// spoken to over plain HTTP (see insecure.go).
	insecure map[string]bool

	// known remembers, per repository, the blobs this process saw the
	// registry hold (it sent them, or the registry said it had them), the
	// way the engine remembers them for docker push: an image all of whose
	// blobs are known there is pushed with its manifest alone.
	mu    sync.Mutex
	known map[string]map[v1.Hash]bool
	// manifests holds the descriptors of the manifests pushed, by
	// repository@digest (see rememberManifest).
	manifests map[string]v1.Descriptor
}

// Option configures a Pusher.
type Option func(*Pusher)

// WithKeychain replaces the Docker configuration keychain (for tests).
func WithKeychain(k authn.Keychain) Option { return func(p *Pusher) { p.keychain = k } }

// WithTransport replaces the HTTP transport (for tests against an
// in-process registry).
func WithTransport(t http.RoundTripper) Option { return func(p *Pusher) { p.transport = t } }

// New returns a Pusher that reads credentials the way the docker CLI does.
// It speaks plain HTTP only to loopback registries and those given with
// WithInsecureRegistries, whatever transport it is given.
func New(opts ...Option) *Pusher {
	p := &Pusher{keychain: authn.DefaultKeychain, transport: remote.DefaultTransport,
		insecure: map[string]bool{}, known: map[string]map[v1.Hash]bool{}}
	for _, o := range opts {
		o(p)
	}
	p.transport = plainHTTPGuard{p: p, inner: retryAfterTransport{p.transport}}
	return p
}

// Push uploads img to each reference in refs (blobs the registry already
// has are not sent again): the first alone, then the others at once. It
// returns, for each, the manifest digest the registry serves for it
// afterwards (the digest of the manifest's bytes as sent). rep takes typed progress (at most a
// record a second for each reference, and its last, with the digest) and
// lines for people (retries, a manifest-only push, each push done). A
// registry that is down or answers 5xx is retried with backoff until ctx
// ends; an authentication error is not retried and says which registry
// refused. On error, the pushes that were done are returned with the first
// failure in refs' order, so the record can tell which tags moved.
func (p *Pusher) Push(ctx context.Context, img v1.Image, refs []string, rep gantry.Reporter) ([]gantry.Push, error) {
	tags := make([]name.Tag, 0, len(refs))
	for _, r := range refs {
		t, err := p.ref(r)
		if err != nil {
			return nil, err
		}
		tags = append(tags, t)
	}
	// The first goes alone: it sends what blobs the registry lacks. The
	// others (the job's own tag, more repositories) go at once: in the
	// same repository they are a manifest each.
	rep = &lockedReporter{rep: rep}
	results := make([]gantry.Push, len(tags))
	errs := make([]error, len(tags))
	one := func(i int) {
		d, n, err := p.pushOne(ctx, img, tags[i], rep)
		if errs[i] = err; err != nil {
			return
		}
		results[i] = gantry.Push{Ref: tags[i].Name(), Digest: d, Bytes: n}
		rep.Progress(gantry.Progress{Ref: tags[i].Name(), Current: n, Total: n, Digest: d})
		rep.Linef("pushed %s@%s", tags[i].Name(), d)
	}
	if len(tags) > 0 {
		if one(0); errs[0] == nil {
			var wg sync.WaitGroup
			for i := 1; i < len(tags); i++ {
				wg.Go(func() { one(i) })
			}
			wg.Wait()
		}
	}
	// Whatever moved, in refs' order, and the first failure.
	var done []gantry.Push
	var first error
	for i := range tags {
		if errs[i] != nil && first == nil {
			first = errs[i]
		}
		if results[i].Digest != "" {
			done = append(done, results[i])
		}
	}
	return done, first
}

// lockedReporter lets the pushes of several tags report at once.
type lockedReporter struct {
	mu  sync.Mutex
	rep gantry.Reporter
}

func (r *lockedReporter) Linef(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Linef(format, args...)
}

func (r *lockedReporter) Progress(pr gantry.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Progress(pr)
}

// Backoff is the wait before the first retry of a push; it doubles up to
// MaxBackoff.
var (
	Backoff    = time.Second
	MaxBackoff = 30 * time.Second
)

func (p *Pusher) pushOne(ctx context.Context, img v1.Image, t name.Tag, rep gantry.Reporter) (string, int64, error) {
	wait := Backoff
	for {
		actx, note := withRetryAfterNote(ctx)
		d, n, err := p.tryPush(actx, img, t, rep)
		if err == nil {
			return d, n, nil
		}
		if ctx.Err() != nil {
			return "", 0, fmt.Errorf("%w (last error: %v)", context.Cause(ctx), p.describe(t, err))
		}
		if !retryable(err) {
			return "", 0, p.describe(t, err)
		}
		// A 429 with a Retry-After is waited out as the registry asks
		// (within bounds); any other passing error backs off.
		delay, limited, rerr := rateLimitWait(ctx, t, err, note)
		switch {
		case rerr != nil:
			return "", 0, rerr
		case limited:
			rep.Linef("rate limited by %s (429, Retry-After); retrying in %v", t.RegistryStr(), delay)
		default:
			delay = wait
			wait = min(2*wait, MaxBackoff)
			rep.Linef("push to %s failed: %v; retrying in %v", t.RegistryStr(), err, delay)
		}
		select {
		case <-ctx.Done():
			return "", 0, fmt.Errorf("%w (last error: %v)", context.Cause(ctx), p.describe(t, err))
		case <-time.After(delay):
		}
	}
}

func (p *Pusher) tryPush(ctx context.Context, img v1.Image, t name.Tag, rep gantry.Reporter) (string, int64, error) {
	blobs, size, err := blobsOf(img)
	if err != nil {
		return "", 0, err
	}
	repo := t.Context().Name()
	n := size
	sent := false
	if p.allKnown(repo, blobs) {
		// Every blob is there: send the manifest alone. Should the
		// registry have lost one since, the full push below finds out.
		if sent = remote.Put(t, img, p.options(ctx)...) == nil; sent {
			rep.Linef("every layer is in %s already: sent the manifest only", repo)
		} else {
			p.forget(repo)
		}
	}
	if !sent {
		updates := make(chan v1.Update, 16)
		reported := make(chan int64, 1)
		go func() { reported <- report(rep, t.Name(), updates) }()
		err = remote.Write(t, img, append(p.options(ctx), remote.WithProgress(updates))...)
		n = <-reported // Write closes updates
		if err != nil {
			return "", 0, err
		}
		p.remember(repo, blobs)
	}
	// The registry keeps the manifest's bytes as they were sent: its
	// digest is theirs, with no round trip to ask.
	desc, err := manifestDescriptor(img)
	if err != nil {
		return "", 0, err
	}
	p.rememberManifest(repo, desc)
	return desc.Digest.String(), n, nil
}

// manifestDescriptor is the descriptor of img's manifest, as a registry
// that holds it describes it.
func manifestDescriptor(img v1.Image) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: d}, nil
}

// Upload sends img's layers and config, not its manifest, to the
// repository of each reference in refs, so that a later Push costs only the
// manifest. Blobs are content-addressed: an upload publishes nothing, no tag
// moves. It does not retry: whatever it could not send, Push sends.
func (p *Pusher) Upload(ctx context.Context, img v1.Image, refs []string) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	cl, err := partial.ConfigLayer(img)
	if err != nil {
		return err
	}
	layers = append(layers, cl)
	blobs, _, err := blobsOf(img)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, r := range refs {
		t, err := p.ref(r)
		if err != nil {
			return err
		}
		repo := t.Context()
		if seen[repo.Name()] || p.allKnown(repo.Name(), blobs) {
			continue
		}
		seen[repo.Name()] = true
		rp, err := remote.NewPusher(p.options(ctx)...)
		if err != nil {
			return err
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(4)
		for _, l := range layers {
			// A blob known there (an image this one extends was sent)
			// is not asked about again.
			if d, err := l.Digest(); err == nil && p.allKnown(repo.Name(), []v1.Hash{d}) {
				continue
			}
			g.Go(func() error { return rp.Upload(gctx, repo, l) })
		}
		if err := g.Wait(); err != nil {
			return p.describe(t, err)
		}
		p.remember(repo.Name(), blobs)
	}
	return nil
}

// blobsOf returns the digests of img's layers and config, and the size a
// push of it covers (blobs and manifest).
func blobsOf(img v1.Image) ([]v1.Hash, int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return nil, 0, err
	}
	hs := []v1.Hash{m.Config.Digest}
	size := m.Config.Size + int64(len(raw))
	for _, l := range m.Layers {
		hs = append(hs, l.Digest)
		size += l.Size
	}
	return hs, size, nil
}

func (p *Pusher) allKnown(repo string, hs []v1.Hash) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.known[repo]
	for _, h := range hs {
		if !k[h] {
			return false
		}
	}
	return len(hs) > 0
}

// maxKnown bounds the blobs remembered per repository; past it the
// repository starts afresh (its next push checks each blob with a HEAD).
const maxKnown = 4096

func (p *Pusher) remember(repo string, hs []v1.Hash) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known[repo] == nil || len(p.known[repo]) > maxKnown {
		p.known[repo] = map[v1.Hash]bool{}
	}
	for _, h := range hs {
		p.known[repo][h] = true
	}
}

// rememberManifest notes a manifest this process pushed to repo, so that
// an artifact attached to it needs no round trip to describe it.
func (p *Pusher) rememberManifest(repo string, desc v1.Descriptor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.manifests == nil || len(p.manifests) > maxKnown {
		p.manifests = map[string]v1.Descriptor{}
	}
	p.manifests[repo+"@"+desc.Digest.String()] = desc
}

// pushedManifest returns the descriptor of the manifest digest this
// process pushed to repo.
func (p *Pusher) pushedManifest(repo, digest string) (*v1.Descriptor, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	desc, ok := p.manifests[repo+"@"+digest]
	return &desc, ok
}

func (p *Pusher) forget(repo string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.known, repo)
}

// retryable reports whether a push error may pass: the registry is
// unreachable, timed out, or answered 408, 429 or 5xx.
func retryable(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode == http.StatusRequestTimeout || terr.StatusCode == http.StatusTooManyRequests || terr.StatusCode >= 500
	}
	// Every network error comes wrapped in a *url.Error, itself a
	// net.Error: look at what it wraps. A refused or reset connection, a
	// dial failure or a timeout may pass; a TLS or protocol mismatch won't.
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func (p *Pusher) options(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(p.keychain),
		remote.WithTransport(p.transport),
		remote.WithJobs(4),
		// Retries are pushOne's, which logs them and knows the deadline.
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
}

// report hands rep a progress record of ref at most every second, and the
// last one, and returns the bytes the push covered.
func report(rep gantry.Reporter, ref string, updates <-chan v1.Update) int64 {
	var last time.Time
	var u v1.Update
	send := func() { rep.Progress(gantry.Progress{Ref: ref, Current: u.Complete, Total: u.Total}) }
	for u = range updates {
		if u.Error != nil {
			continue
		}
		if time.Since(last) >= time.Second {
			last = time.Now()
			send()
		}
	}
	if u.Total > 0 {
		send()
	}
	return u.Total
}

// Discard is a Reporter that takes nothing.
var Discard gantry.Reporter = discard{}

type discard struct{}

func (discard) Linef(string, ...any)     {}
func (discard) Progress(gantry.Progress) {}

// describe turns a registry error into one a user can act on, naming the
// registry.
func (p *Pusher) describe(t name.Tag, err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) && p.plainHTTPRefused(t) {
		reg := t.RegistryStr()
		return fmt.Errorf("push to %s: registry %s did not answer over HTTPS, and gantryd speaks plain HTTP only to loopback registries and those given with --insecure-registry (start gantryd with --insecure-registry %s if this registry is meant to be reached without TLS): %w", reg, reg, reg, err)
	}
	if errors.As(err, &terr) && denied(terr) {
		return deniedError(t, terr)
	}
	return fmt.Errorf("push to %s: %w", t.RegistryStr(), err)
}

// Attach pushes data as an OCI artifact of type mediaType whose subject is
// the manifest subject (a digest) in the repository of ref, and returns the
// artifact's digest. The subject's own digest is unchanged. Registries with
// the OCI referrers API index it there; for others the referrers tag scheme
// ("sha256-<subject hex>") is kept up to date.
func (p *Pusher) Attach(ctx context.Context, ref, subject, mediaType string, data []byte) (string, error) {
	return p.attach(ctx, ref, subject, func(sub v1.Descriptor) (v1.Image, error) {
		layer := static.NewLayer(data, types.MediaType(mediaType))
		img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer})
		if err != nil {
			return nil, err
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.MediaType(mediaType))
		return mutate.Subject(img, sub).(v1.Image), nil
	})
}

// attach pushes, by its digest, the artifact that artifact makes for the
// descriptor of the manifest subject in ref's repository, and returns the
// artifact's digest.
func (p *Pusher) attach(ctx context.Context, ref, subject string, artifact func(sub v1.Descriptor) (v1.Image, error)) (string, error) {
	t, err := p.ref(ref)
	if err != nil {
		return "", err
	}
	sub, ok := p.pushedManifest(t.Context().Name(), subject)
	if !ok {
		if sub, err = p.descriptor(ctx, t.Context().Digest(subject)); err != nil {
			return "", err
		}
	}
	img, err := artifact(*sub)
	if err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	if err := remote.Write(t.Context().Digest(d.String()), img, p.options(ctx)...); err != nil {
		return "", p.describe(t, err)
	}
	return d.String(), nil
}

func (p *Pusher) descriptor(ctx context.Context, d name.Digest) (*v1.Descriptor, error) {
	desc, err := remote.Head(d, p.options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("subject %s: %w", d, err)
	}
	return desc, nil
}

// Attached returns the data of the newest artifact of type mediaType that
// refers to the manifest subject in the repository of ref. It returns
// ErrNotFound when there is none.
func (p *Pusher) Attached(ctx context.Context, ref, subject, mediaType string) ([]byte, error) {
	t, err := p.ref(ref)
	if err != nil {
		return nil, err
	}
	idx, err := remote.Referrers(t.Context().Digest(subject), p.options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for i := len(m.Manifests) - 1; i >= 0; i-- {
		desc := m.Manifests[i]
		if desc.ArtifactType != mediaType {
			continue
		}
		img, err := remote.Image(t.Context().Digest(desc.Digest.String()), p.options(ctx)...)
		if err != nil {
			return nil, err
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			return nil, fmt.Errorf("artifact %s: want one layer: %v", desc.Digest, err)
		}
		rc, err := layers[0].Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(io.LimitReader(rc, 16<<20))
	}
	return nil, gantry.Errorf(gantry.ErrNotFound, "no %s artifact refers to %s", mediaType, subject)
}

// Resolve returns the digest the registry serves for ref. It returns
// ErrNotFound when the tag does not exist.
func (p *Pusher) Resolve(ctx context.Context, ref string) (string, error) {
	t, err := p.ref(ref)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(t, p.options(ctx)...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return "", gantry.Errorf(gantry.ErrNotFound, "%s: no such tag", t.Name())
	}
	if err != nil {
		return "", p.describe(t, err)
	}
	return desc.Digest.String(), nil
}

// Tag points ref at the manifest digest already in ref's repository.
func (p *Pusher) Tag(ctx context.Context, ref, digest string) error {
	t, err := p.ref(ref)
	if err != nil {
		return err
	}
	desc, err := remote.Get(t.Context().Digest(digest), p.options(ctx)...)
	if err != nil {
		return p.describe(t, err)
	}
	if err := remote.Tag(t, desc, p.options(ctx)...); err != nil {
		return p.describe(t, err)
	}
	return nil
}

// Image reads the image ref (a tag or a digest reference) from its
// registry, with the same credentials and transport as a push. Its layers
// are read when they are needed: pushing it to another repository of the
// same registry mounts them. It returns ErrNotFound when the registry has
// no such image.
func (p *Pusher) Image(ctx context.Context, ref string) (v1.Image, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "image %q: %v", ref, err)
	}
	if p.plainHTTPOK(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.StrictValidation, name.Insecure); err != nil {
			return nil, gantry.Errorf(gantry.ErrInvalid, "image %q: %v", ref, err)
		}
	}
	img, err := remote.Image(r, p.options(ctx)...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return nil, gantry.Errorf(gantry.ErrNotFound, "image %s: not in the registry", ref)
	}
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", ref, err)
	}
	return img, nil
}
