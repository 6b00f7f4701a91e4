package daemon

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/gantry-ml/gantry"
)

// resolver looks a host name up; net.DefaultResolver.LookupNetIP is one.
type resolver func(ctx context.Context, network, host string) ([]netip.Addr, error)

// fetchRule is what a build may fetch from: BuildKit fetches a Dockerfile's
// ADD URLs (and git sources) from the engine's network namespace, which is
// the host's, so a build could copy a service that listens only on the
// host's loopback into the image.
type fetchRule struct {
	allowPrivate bool
	resolve      resolver
}

// checkFetches refuses the Dockerfile df (named name) when one of its ADD
// lines fetches from a loopback, link-local or unspecified address, or
// (unless the policy allows it) a private one. Build arguments, ARG
// defaults and ENV values are expanded as BuildKit would. It returns
// ErrForbidden, naming the line.
func (r fetchRule) checkFetches(ctx context.Context, df []byte, name string, args map[string]string) error {
	if !bytes.Contains(bytes.ToLower(df), []byte("add")) {
		return nil // nothing fetched: no need to parse it
	}
	res, err := parser.Parse(bytes.NewReader(df))
	if err != nil {
		return gantry.Errorf(gantry.ErrInvalid, "dockerfile %s: %v", name, err)
	}
	env := &dockerEnv{args: args, meta: map[string]string{}, vars: map[string]string{}}
	lex := shell.NewLex(res.EscapeToken)
	for _, n := range res.AST.Children {
		switch strings.ToLower(n.Value) {
		case "from":
			env.from()
		case "arg":
			env.arg(n)
		case "env":
			env.env(n, lex)
		case "add":
			if err := r.checkAdd(ctx, n, lex, env, name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r fetchRule) checkAdd(ctx context.Context, n *parser.Node, lex *shell.Lex, env *dockerEnv, file string) error {
	var words []string
	for w := n.Next; w != nil; w = w.Next {
		words = append(words, w.Value)
	}
	if len(words) < 2 {
		return nil
	}
	for _, src := range words[:len(words)-1] {
		res, err := lex.ProcessWordWithMatches(src, env)
		if err != nil {
			continue
		}
		word := res.Result
		if len(res.Unmatched) > 0 {
			// The base image's ENV may set it: unknown until the build.
			return gantry.Errorf(gantry.ErrForbidden, "%s line %d: ADD %s: it uses %s, which gantryd cannot resolve before the build to check where ADD fetches from; give it with --build-arg or an ARG default", file, n.StartLine, src, strings.Join(slices.Sorted(maps.Keys(res.Unmatched)), ", "))
		}
		host := remoteHost(word)
		if host == "" {
			continue
		}
		if err := r.checkHost(ctx, host); err != nil {
			return gantry.Errorf(gantry.ErrForbidden, "%s line %d: ADD %s: %v", file, n.StartLine, word, err)
		}
	}
	return nil
}

// remoteHost returns the host a source of ADD is fetched from, or "" for a
// file of the build context.
func remoteHost(src string) string {
	if rest, ok := strings.CutPrefix(src, "git@"); ok {
		host, _, _ := strings.Cut(rest, ":")
		return host
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return ""
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "git", "ssh":
		return u.Hostname()
	}
	return ""
}

// checkHost says why a build may not fetch from host, or nil. A name is
// resolved now; what it resolves to at build time is BuildKit's.
func (r fetchRule) checkHost(ctx context.Context, host string) error {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		addrs, err = r.resolve(rctx, "ip", host)
		if err != nil {
			// Nothing to fetch from: the build will say so itself.
			return nil
		}
	}
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.IsLoopback(), a.IsUnspecified(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast(), a.IsMulticast():
			return fmt.Errorf("%s (%s) is an address of the host itself, or of its link: a build may not fetch from it (the engine fetches ADD URLs from the host's network)", host, a)
		case a.IsPrivate() && !r.allowPrivate:
			return fmt.Errorf("%s (%s) is a private network address: a build may fetch from it only when gantryd is started with --build-allow-private", host, a)
		}
	}
	return nil
}

// dockerEnv is what a Dockerfile's variables hold as its lines are read:
// in each stage, its ARGs (the build argument given, else the default, else
// the ARG of that name before the first FROM) and ENV values.
type dockerEnv struct {
	args  map[string]string
	meta  map[string]string // ARGs before the first FROM
	vars  map[string]string // the current stage's
	stage bool
}

func (e *dockerEnv) from() {
	e.stage = true
	e.vars = map[string]string{}
}

func (e *dockerEnv) arg(n *parser.Node) {
	for w := n.Next; w != nil; w = w.Next {
		k, v, hasDefault := strings.Cut(w.Value, "=")
		given, ok := e.args[k]
		switch {
		case ok:
		case hasDefault:
			given = strings.Trim(v, `"'`)
		case e.stage:
			given, ok = e.meta[k]
			if !ok {
				continue
			}
		default:
			continue
		}
		if e.stage {
			e.vars[k] = given
		} else {
			e.meta[k] = given
		}
	}
}

func (e *dockerEnv) env(n *parser.Node, lex *shell.Lex) {
	for w := n.Next; w != nil && w.Next != nil; w = w.Next.Next {
		v, _, err := lex.ProcessWord(w.Next.Value, e)
		if err == nil {
			e.vars[w.Value] = v
		}
	}
}

// Get and Keys make dockerEnv a shell.EnvGetter.
func (e *dockerEnv) Get(k string) (string, bool) { v, ok := e.vars[k]; return v, ok }

func (e *dockerEnv) Keys() []string {
	keys := make([]string, 0, len(e.vars))
	for k := range e.vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// lookupNetIP is the system's resolver.
func lookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}
