package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/gantry-ml/gantry"
)

// dockerfile builds on the busybox base at BASE, with a RUN step whose
// output depends on the nonce (so that only a cache can skip it) and a
// COPY from the context.
const dockerfile = `FROM BASE
RUN echo NONCE > /built && cat /built
COPY hello.txt /hello.txt
`

func nonceContext(t *testing.T, base string) string {
	t.Helper()
	df := strings.NewReplacer("BASE", base, "NONCE", gantry.NewID(time.Now())).Replace(dockerfile)
	return writeContext(t, map[string]string{"Dockerfile": df, "hello.txt": "hello\n"})
}

// A build with Stage pushes its image by digest to the staging repository
// of a standalone buildkitd reached over mutual TLS, and reports the digest
// the registry serves.
func TestBuildPushesToStage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real buildkitd and registry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	reg := startRegistry(t)
	base := reg + "/base/busybox:1"
	pushBusybox(t, base)
	b, _ := startBuildKit(t, ctx, reg)

	stage := reg + "/gantry/staging"
	var progress bytes.Buffer
	res, err := b.Build(ctx, Request{ContextDir: nonceContext(t, base), Stage: stage}, &progress)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, progress.String())
	}
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(res.Digest) {
		t.Fatalf("digest %q, want sha256:...", res.Digest)
	}
	if want := stage + "@" + res.Digest; res.ImageID != want {
		t.Errorf("image ID %q, want %q", res.ImageID, want)
	}
	if got := headDigest(t, res.ImageID); got.String() != res.Digest {
		t.Errorf("registry serves %s for %s, build reported %s", got, res.ImageID, res.Digest)
	}
	if len(res.Bases) != 1 || !strings.Contains(res.Bases[0], "base/busybox:1") {
		t.Errorf("bases %q, want the busybox base", res.Bases)
	}
}

// The registry cache (CacheRef) survives its buildkitd: a fresh, empty
// buildkitd building the same context finds every Dockerfile step that
// does work cached and pushes the same image.
func TestBuildCacheSurvivesBuildKit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real buildkitds and a registry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	reg := startRegistry(t)
	base := reg + "/base/busybox:1"
	pushBusybox(t, base)
	dir := nonceContext(t, base)
	r := Request{ContextDir: dir, Stage: reg + "/gantry/staging", CacheRef: reg + "/gantry/cache:build"}

	b1, close1 := startBuildKit(t, ctx, reg)
	first, steps1 := buildSteps(t, ctx, b1, r)
	if c := steps1["[2/3] RUN"]; c == nil || *c {
		t.Fatalf("first build: RUN step cached=%v, want it run (steps %v)", c, steps1)
	}
	close1() // its state is gone with it

	b2, _ := startBuildKit(t, ctx, reg)
	second, steps2 := buildSteps(t, ctx, b2, r)
	// FROM only resolves the base (it has nothing to run); RUN and COPY
	// would run again without the cache.
	for _, s := range []string{"[2/3] RUN", "[3/3] COPY"} {
		if c := steps2[s]; c == nil || !*c {
			t.Errorf("second build on a fresh buildkitd: step %s cached=%v, want cached", s, c)
		}
	}
	if second.Digest != first.Digest {
		t.Errorf("second build pushed %s, first %s; want the same image\nfirst config: %s\nsecond config: %s",
			second.Digest, first.Digest, rawConfig(t, first.ImageID), rawConfig(t, second.ImageID))
	}
}

// buildSteps builds r on b and returns the result and, per Dockerfile step
// ("[2/3] RUN"), whether BuildKit reported it cached once it completed.
func buildSteps(t *testing.T, ctx context.Context, b *Builder, r Request) (Result, map[string]*bool) {
	t.Helper()
	var status, progress bytes.Buffer
	r.Status = &status
	res, err := b.Build(ctx, r, &progress)
	if err != nil {
		t.Fatalf("build: %v\n%s", err, progress.String())
	}
	step := regexp.MustCompile(`^(\[\d+/\d+\] [A-Z]+)`)
	steps := map[string]*bool{}
	dec := json.NewDecoder(&status)
	for {
		var s client.SolveStatus
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("status: %v", err)
		}
		for _, v := range s.Vertexes {
			m := step.FindStringSubmatch(v.Name)
			if m == nil || v.Completed == nil {
				continue
			}
			cached := v.Cached
			steps[m[1]] = &cached
		}
	}
	t.Logf("steps %v\n%s", fmtSteps(steps), progress.String())
	return res, steps
}

func fmtSteps(steps map[string]*bool) map[string]bool {
	m := map[string]bool{}
	for k, v := range steps {
		m[k] = *v
	}
	return m
}
