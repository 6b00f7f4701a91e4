package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// retainCleaner is an engine's images as a prune sees them: name to image
// ID, the images a container uses, and the removals and cache prunes asked.
type retainCleaner struct {
	mu       sync.Mutex
	images   map[string]string
	inUse    map[string]bool
	removed  []string
	cachePru []int64
}

func (c *retainCleaner) ImageSize(ctx context.Context, ref string) (string, int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.images[ref]
	if !ok {
		return "", 0, gantry.Errorf(gantry.ErrNotFound, "no image %s", ref)
	}
	return id, 1000, nil
}

func (c *retainCleaner) RemoveUnusedImage(ctx context.Context, ref string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.images[ref]
	if !ok {
		return false, nil
	}
	if c.inUse[id] {
		return false, gantry.Errorf(gantry.ErrConflict, "image %s is used by a container", ref)
	}
	delete(c.images, ref)
	c.removed = append(c.removed, ref)
	return true, nil
}

func (c *retainCleaner) ImageOwnSizes(ctx context.Context) (map[string]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sizes := map[string]int64{}
	for _, id := range c.images {
		sizes[id] = 1000
	}
	return sizes, nil
}

func (c *retainCleaner) ImageInUse(ctx context.Context, ref string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inUse[c.images[ref]], nil
}

func (c *retainCleaner) PruneBuildCache(ctx context.Context, keep int64) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cachePru = append(c.cachePru, keep)
	return 500, nil
}

func retainJob(name string, st gantry.State, finished time.Time, edit func(*gantry.Job)) *gantry.Job {
	j := gantry.NewJob(gantry.Spec{Push: []string{"127.0.0.1:5000/" + name + ":v1"}}, finished.Add(-time.Minute))
	j.State = st
	if st.Terminal() {
		f := finished.UTC()
		j.Times.Finished = &f
	}
	if edit != nil {
		edit(j)
	}
	return j
}

func inSweep(id string) func(*gantry.Job) { return func(j *gantry.Job) { j.Sweep = id } }

func TestPlanPrune(t *testing.T) {
	now := time.Now()
	old := now.Add(-48 * time.Hour)
	promoted := func(tag string) func(*gantry.Job) {
		return func(j *gantry.Job) { j.Promotions = []gantry.Promotion{{Tag: tag, Promoted: true}} }
	}
	tests := []struct {
		name   string
		jobs   []*gantry.Job // oldest first, as created
		busy   int           // index of a busy job, -1 for none
		cutoff time.Time
		keep   int
		want   []int // indices removed
	}{
		{name: "keep the newest per name", jobs: []*gantry.Job{
			retainJob("a", gantry.StateSucceeded, old, nil), retainJob("b", gantry.StateFailed, old, nil),
			retainJob("a", gantry.StateRejected, old, nil), retainJob("a", gantry.StateSucceeded, old, nil),
		}, busy: -1, cutoff: now, keep: 1, want: []int{0, 2}},
		{name: "young jobs stay", jobs: []*gantry.Job{
			retainJob("a", gantry.StateSucceeded, old, nil), retainJob("a", gantry.StateSucceeded, now, nil),
			retainJob("a", gantry.StateSucceeded, now, nil),
		}, busy: -1, cutoff: now.Add(-time.Hour), keep: 0, want: []int{0}},
		{name: "the newest promoted per tag stays", jobs: []*gantry.Job{
			retainJob("a", gantry.StateSucceeded, old, promoted("r/a:best")), retainJob("a", gantry.StateSucceeded, old, promoted("r/a:best")),
			retainJob("a", gantry.StateSucceeded, old, promoted("r/a:prod")), retainJob("a", gantry.StateSucceeded, old, nil),
		}, busy: -1, cutoff: now, keep: 0, want: []int{0, 3}},
		{name: "unfinished and busy jobs stay", jobs: []*gantry.Job{
			retainJob("a", gantry.StateRunning, old, nil), retainJob("a", gantry.StateQueued, old, nil),
			retainJob("a", gantry.StateSucceeded, old, nil), retainJob("a", gantry.StateSucceeded, old, nil),
		}, busy: 2, cutoff: now, keep: 0, want: []int{3}},
		{name: "a sweep goes whole or not at all", jobs: []*gantry.Job{
			retainJob("a", gantry.StateSucceeded, old, inSweep("s1")), retainJob("a", gantry.StateSucceeded, old, inSweep("s1")),
			retainJob("a", gantry.StateSucceeded, old, inSweep("s2")), retainJob("a", gantry.StateSucceeded, old, inSweep("s2")),
			retainJob("a", gantry.StateSucceeded, old, inSweep("s2")),
		}, busy: -1, cutoff: now, keep: 1, want: []int{0, 1}},
		{name: "unfinished jobs do not count toward keep", jobs: []*gantry.Job{
			retainJob("a", gantry.StateSucceeded, old, nil), retainJob("a", gantry.StateSucceeded, old, nil),
			retainJob("a", gantry.StateRunning, old, nil),
		}, busy: -1, cutoff: now, keep: 1, want: []int{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			newest := slices.Clone(tc.jobs)
			slices.Reverse(newest)
			busy := func(j *gantry.Job) bool { return tc.busy >= 0 && j == tc.jobs[tc.busy] }
			remove, kept := planPrune(newest, busy, tc.cutoff, tc.keep)
			var got []int
			for i, j := range tc.jobs {
				if slices.Contains(remove, j) {
					got = append(got, i)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("removed %v, want %v", got, tc.want)
			}
			if len(remove)+len(kept) != len(tc.jobs) {
				t.Errorf("removed %d and kept %d of %d jobs", len(remove), len(kept), len(tc.jobs))
			}
		})
	}
}

// retainFixture is a data dir and store holding five finished jobs of one
// image name: old (its own output blob and one shared with newest),
// champion (promoted), inUse (a container uses its image), newest, and a
// running one.
type retainFixture struct {
	r                                  *pipeRig
	cleaner                            *retainCleaner
	old, champion, inUse, newest, runs *gantry.Job
	own, shared, orphan                string // blob paths (orphan: no record lists it)
}

func newRetainFixture(t *testing.T, opts ...func(*Config)) *retainFixture {
	t.Helper()
	c := &retainCleaner{images: map[string]string{}, inUse: map[string]bool{}}
	opts = append([]func(*Config){func(cfg *Config) { cfg.Cleaner = c; cfg.Retention.BuildCacheKeep = 1 << 30 }}, opts...)
	r := pipeNewRig(t, 1, pipeNewFakes(t), opts...)
	old := time.Now().Add(-72 * time.Hour)
	outs := func(digests ...string) func(*gantry.Job) {
		return func(j *gantry.Job) {
			j.Outputs = &gantry.Outputs{Dir: "/output"}
			for i, d := range digests {
				j.Outputs.Files = append(j.Outputs.Files, gantry.OutputFile{Path: fmt.Sprint(i), Digest: d, Size: 5})
			}
		}
	}
	ownD, sharedD, orphanD := "sha256:"+fmt.Sprintf("%064d", 1), "sha256:"+fmt.Sprintf("%064d", 2), "sha256:"+fmt.Sprintf("%064d", 3)
	f := &retainFixture{r: r, cleaner: c,
		old: retainJob("iris", gantry.StateSucceeded, old, outs(ownD, sharedD)),
		champion: retainJob("iris", gantry.StateSucceeded, old, func(j *gantry.Job) {
			j.Promotions = []gantry.Promotion{{Tag: "127.0.0.1:5000/iris:best", Promoted: true}}
		}),
		inUse:  retainJob("iris", gantry.StateFailed, old, nil),
		newest: retainJob("iris", gantry.StateSucceeded, old.Add(time.Hour), outs(sharedD)),
		runs:   retainJob("iris", gantry.StateRunning, old, nil),
		own:    r.d.outputBlob(ownD), shared: r.d.outputBlob(sharedD), orphan: r.d.outputBlob(orphanD),
	}
	if err := os.MkdirAll(filepath.Dir(f.own), 0o700); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-time.Hour)
	for _, p := range []string{f.own, f.shared, f.orphan} {
		pipeWriteFile(t, p, "bytes")
		os.Chtimes(p, long, long)
	}
	for _, j := range []*gantry.Job{f.old, f.champion, f.inUse, f.newest, f.runs} {
		j.Image = pipeImageID(j.ID)
		if err := r.st.Create(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		c.images[j.ImageName] = j.Image
		pipeWriteFile(t, r.d.LogPath(j.ID), "log of "+j.ID)
		pipeWriteFile(t, r.d.SeriesPath(j.ID), "{}")
	}
	c.inUse[f.inUse.Image] = true
	return f
}

// gone reports which of f's jobs have no record.
func (f *retainFixture) gone(t *testing.T) []string {
	var out []string
	for _, j := range []*gantry.Job{f.old, f.champion, f.inUse, f.newest, f.runs} {
		_, err := f.r.d.Get(context.Background(), j.ID)
		if errors.Is(err, gantry.ErrNotFound) {
			out = append(out, j.ID)
		} else if err != nil {
			t.Fatalf("Get(%s): %v", j.ID, err)
		}
	}
	return out
}

// A prune with keep 1 removes the old job alone: its record, log, series,
// own output blob and image; the champion, the newest, the running job
// and the job whose image a container uses stay, with the shared blob. A
// dry run lists the same and removes nothing.
func TestPruneRemovesFinishedJobs(t *testing.T) {
	f := newRetainFixture(t)
	ctx := context.Background()
	zero := gantry.Duration(0)
	o := gantry.PruneOptions{OlderThan: &zero, Keep: pipeInt(1), DryRun: true}
	dry, err := f.r.d.Prune(ctx, o)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if g := f.gone(t); len(g) != 0 || len(f.cleaner.removed) != 0 || !pipeExists(t, f.own) || !pipeExists(t, f.r.d.LogPath(f.old.ID)) {
		t.Fatalf("dry run removed jobs %v, images %v, or files", g, f.cleaner.removed)
	}
	// A follower of the event stream learns the job is gone.
	seq, err := f.r.st.LastEvent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	removedSeen := make(chan string, 1)
	go f.r.d.Events(fctx, seq, "", true, func(e *gantry.Event) error {
		if e.Type == gantry.EventRemoved {
			removedSeen <- e.Job
			return errors.New("seen")
		}
		return nil
	})
	o.DryRun = false
	rep, err := f.r.d.Prune(ctx, o)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if g := f.gone(t); !slices.Equal(g, []string{f.old.ID}) {
		t.Errorf("removed jobs %v, want only the old one %s", g, f.old.ID)
	}
	if !slices.Equal(f.cleaner.removed, []string{f.old.ImageName}) {
		t.Errorf("removed images %v, want %s", f.cleaner.removed, f.old.ImageName)
	}
	for path, want := range map[string]bool{
		f.own: false, f.shared: true, f.orphan: false, f.r.d.LogPath(f.old.ID): false, f.r.d.SeriesPath(f.old.ID): false,
		f.r.d.LogPath(f.newest.ID): true, f.r.d.LogPath(f.inUse.ID): true,
	} {
		if got := pipeExists(t, path); got != want {
			t.Errorf("%s exists: %v, want %v", path, got, want)
		}
	}
	var files []string
	for _, fl := range rep.Files {
		files = append(files, fl.Path)
	}
	slices.Sort(files)
	want := []string{f.own, f.orphan, f.r.d.LogPath(f.old.ID), f.r.d.SeriesPath(f.old.ID)}
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("report lists files %v, want %v", files, want)
	}
	// The dry run listed what the prune then removed, job for image.
	if pipeJSON(dry.Jobs) != pipeJSON(rep.Jobs) || pipeJSON(dry.Images) != pipeJSON(rep.Images) || len(dry.Files) != len(rep.Files) || len(dry.Problems) != 1 {
		t.Errorf("dry run listed %s %s, the prune removed %s %s", pipeJSON(dry.Jobs), pipeJSON(dry.Images), pipeJSON(rep.Jobs), pipeJSON(rep.Images))
	}
	if len(rep.Problems) != 1 || rep.Kept != 3 || rep.BuildCache != 500 || rep.Bytes != 1000+500+rep.Files[0].Bytes+rep.Files[1].Bytes+rep.Files[2].Bytes+rep.Files[3].Bytes {
		t.Errorf("report: problems %q, kept %d, build cache %d, bytes %d", rep.Problems, rep.Kept, rep.BuildCache, rep.Bytes)
	}
	if got := pipeReceive(t, "the removed event", removedSeen); got != f.old.ID {
		t.Errorf("a follower saw job %s removed, want %s", got, f.old.ID)
	}
	evs, err := f.r.st.Events(ctx, 0, f.old.ID, 0)
	if err != nil || len(evs) != 1 || evs[0].Type != gantry.EventRemoved {
		t.Errorf("events of the removed job: %s %v, want one removed event", pipeJSON(evs), err)
	}
}

func TestPruneRefusesNegativeBounds(t *testing.T) {
	f := newRetainFixture(t)
	if _, err := f.r.d.Prune(context.Background(), gantry.PruneOptions{Keep: pipeInt(-1)}); !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("keep -1: %v, want ErrInvalid", err)
	}
}

// With retention on, each job that ends applies the policy: after three
// jobs of one image name with --retain-per-image 1 and --retain 0, only
// the newest is left, and its image; the images of the others are gone.
func TestRetentionAfterEachJob(t *testing.T) {
	c := &retainCleaner{images: map[string]string{}, inUse: map[string]bool{}}
	fk := pipeNewFakes(t)
	fk.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
		fmt.Fprintln(out, "Model accuracy: 0.9")
		return runner.Exit{}, nil
	}
	r := pipeNewRig(t, 1, fk, func(cfg *Config) {
		cfg.Cleaner = c
		cfg.Retention = Retention{Auto: true, PerImage: 1}
	})
	pipeRun(t, r.d)
	var last *gantry.Job
	for range 3 {
		j := pipeSubmit(t, r.d, gantry.Spec{})
		c.mu.Lock()
		c.images[j.ImageName] = pipeImageID(j.ID)
		c.mu.Unlock()
		last = pipeWait(t, r.d, j.ID)
	}
	pipeEventually(t, "retention to leave one job", func() bool {
		jobs, _, err := r.st.List(context.Background(), gantry.JobFilter{})
		return err == nil && len(jobs) == 1 && jobs[0].ID == last.ID
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.images[last.ImageName]; !ok || len(c.images) != 1 || len(c.removed) != 2 {
		t.Errorf("images left %v, removed %v: want only %s left", c.images, c.removed, last.ImageName)
	}
}
