package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gantry-ml/gantry"
)

var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newStore(t *testing.T) *Store {
	t.Helper()
	return open(t, filepath.Join(t.TempDir(), "gantry.db"))
}

// makeJobs creates n queued jobs one millisecond apart, so that their IDs
// sort in the order they are returned.
func makeJobs(t *testing.T, s *Store, n int) []*gantry.Job {
	t.Helper()
	jobs := make([]*gantry.Job, n)
	for i := range jobs {
		jobs[i] = gantry.NewJob(gantry.Spec{}, base.Add(time.Duration(i)*time.Millisecond))
		if err := s.Create(context.Background(), jobs[i]); err != nil {
			t.Fatalf("Create(%d): %v", i, err)
		}
	}
	return jobs
}

func move(t *testing.T, s *Store, id string, to gantry.State) {
	t.Helper()
	_, err := s.Update(context.Background(), id, func(j *gantry.Job) error { return j.Move(to, base) })
	if err != nil {
		t.Fatalf("move %s to %s: %v", id, to, err)
	}
}

func ids(jobs []*gantry.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func asJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func ptr[T any](v T) *T { return &v }

// fullJob returns a job with every field set, pointers and times included.
func fullJob() *gantry.Job {
	j := gantry.NewJob(gantry.Spec{
		Build: gantry.BuildSpec{
			Dockerfile: "train/Dockerfile",
			BuildArgs:  map[string]string{"EPOCHS": "10", "LR": "0.01"},
			Target:     "train",
		},
		Push:        []string{"127.0.0.1:5000/iris:v1", "127.0.0.1:5000/iris:latest"},
		MinAccuracy: ptr(0.9),
		MetricRegex: `acc=([0-9.]+)`,
	}, base)
	at := func(s int) *time.Time { return ptr(base.Add(time.Duration(s) * time.Second)) }
	j.State = gantry.StatePushing
	j.Error = "push 127.0.0.1:5000/iris:latest: denied"
	j.Image = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	j.ContainerID = "4f1c2d3e"
	j.ExitCode = ptr(0)
	j.Metrics.Accuracy = ptr(0.9667)
	j.Pushes = []gantry.Push{{Ref: "127.0.0.1:5000/iris:v1", Digest: "sha256:aaaa"}}
	j.Times.Build = gantry.Phase{Started: at(1), Finished: at(2)}
	j.Times.Run = gantry.Phase{Started: at(2), Finished: at(3)}
	j.Times.Push = gantry.Phase{Started: at(3), Finished: at(4)}
	j.Times.Finished = at(4)
	j.ContextSize = 123456
	return j
}

func TestCreateGetRoundTrip(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	want := fullJob()
	if err := s.Create(ctx, want); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := s.Get(ctx, want.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get returned\n%s\nwant\n%s", asJSON(got), asJSON(want))
	}

	// What Get returns is the caller's own copy.
	got.Spec.Build.BuildArgs["EPOCHS"] = "999"
	*got.ExitCode = 7
	again, err := s.Get(ctx, want.ID)
	if err != nil {
		t.Fatalf("Get again: %v", err)
	}
	if again.Spec.Build.BuildArgs["EPOCHS"] != "10" || *again.ExitCode != 0 {
		t.Errorf("changing a returned job changed the stored one: %s", asJSON(again))
	}
}

func TestCreateErrors(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	existing := gantry.NewJob(gantry.Spec{}, base)
	if err := s.Create(ctx, existing); err != nil {
		t.Fatalf("Create: %v", err)
	}
	badState := gantry.NewJob(gantry.Spec{}, base.Add(time.Millisecond))
	badState.State = "paused"
	badID := gantry.NewJob(gantry.Spec{}, base)
	badID.ID = "../etc/passwd"
	dup := *existing
	dup.Error = "second"

	tests := []struct {
		name string
		job  *gantry.Job
		want error
	}{
		{"same ID twice", &dup, gantry.ErrConflict},
		{"invalid ID", badID, gantry.ErrInvalid},
		{"empty ID", &gantry.Job{State: gantry.StateQueued}, gantry.ErrInvalid},
		{"unknown state", badState, gantry.ErrInvalid},
		{"nil job", nil, gantry.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Create(ctx, tt.job)
			if !errors.Is(err, tt.want) {
				t.Errorf("Create: got error %v, want kind %v", err, tt.want)
			}
		})
	}

	got, err := s.Get(ctx, existing.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Error != "" {
		t.Errorf("the refused duplicate overwrote the first job: Error = %q", got.Error)
	}
}

func TestNotFound(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	makeJobs(t, s, 1)
	missing := gantry.NewID(base.Add(time.Hour))
	for _, id := range []string{missing, "", "../etc/passwd", strings.ToUpper(missing)} {
		t.Run(fmt.Sprintf("%q", id), func(t *testing.T) {
			if _, err := s.Get(ctx, id); !errors.Is(err, gantry.ErrNotFound) {
				t.Errorf("Get: got error %v, want kind %v", err, gantry.ErrNotFound)
			}
			called := false
			_, err := s.Update(ctx, id, func(*gantry.Job) error { called = true; return nil })
			if !errors.Is(err, gantry.ErrNotFound) {
				t.Errorf("Update: got error %v, want kind %v", err, gantry.ErrNotFound)
			}
			if called {
				t.Error("Update called fn for a missing job")
			}
		})
	}
}

func TestCanceledContext(t *testing.T) {
	s := newStore(t)
	jobs := makeJobs(t, s, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	id := jobs[0].ID

	calls := map[string]func() error{
		"Create": func() error { return s.Create(ctx, gantry.NewJob(gantry.Spec{}, base.Add(time.Second))) },
		"Get":    func() error { _, err := s.Get(ctx, id); return err },
		"Update": func() error {
			_, err := s.Update(ctx, id, func(j *gantry.Job) error { return j.Move(gantry.StateBuilding, base) })
			return err
		},
		"List":       func() error { _, _, err := s.List(ctx, gantry.JobFilter{}); return err },
		"Unfinished": func() error { _, err := s.Unfinished(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: got error %v, want %v", name, err, context.Canceled)
		}
	}
	got, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.State != gantry.StateQueued {
		t.Errorf("state after canceled Update: got %s, want %s", got.State, gantry.StateQueued)
	}
}

func TestUpdate(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	id := makeJobs(t, s, 1)[0].ID

	var seen *gantry.Job
	got, err := s.Update(ctx, id, func(j *gantry.Job) error {
		seen = j
		j.ContainerID = "c1"
		return j.Move(gantry.StateBuilding, base.Add(time.Second))
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if got.State != gantry.StateBuilding || got.ContainerID != "c1" {
		t.Errorf("Update returned state %s, container %q; want %s, %q", got.State, got.ContainerID, gantry.StateBuilding, "c1")
	}
	if got == seen {
		t.Error("Update returned the job fn saw, not a copy")
	}
	stored, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(stored, got) {
		t.Errorf("stored job\n%s\ndiffers from the one Update returned\n%s", asJSON(stored), asJSON(got))
	}
}

func TestUpdateAborts(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		fn      func(*gantry.Job) error
		wantErr func(error) bool
	}{
		{
			name: "fn error is returned unchanged",
			fn: func(j *gantry.Job) error {
				j.Error = "half done"
				if err := j.Move(gantry.StateFailed, base); err != nil {
					return err
				}
				return boom
			},
			wantErr: func(err error) bool { return err == boom },
		},
		{
			name:    "illegal move",
			fn:      func(j *gantry.Job) error { return j.Move(gantry.StatePushing, base) },
			wantErr: func(err error) bool { return errors.Is(err, gantry.ErrConflict) },
		},
		{
			name:    "fn changes the ID",
			fn:      func(j *gantry.Job) error { j.ID = gantry.NewID(base.Add(time.Hour)); return nil },
			wantErr: func(err error) bool { return errors.Is(err, gantry.ErrInvalid) },
		},
		{
			name:    "fn sets an unknown state",
			fn:      func(j *gantry.Job) error { j.State = "paused"; return nil },
			wantErr: func(err error) bool { return errors.Is(err, gantry.ErrInvalid) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			ctx := context.Background()
			before := makeJobs(t, s, 1)[0]
			got, err := s.Update(ctx, before.ID, tt.fn)
			if !tt.wantErr(err) {
				t.Errorf("Update: got error %v", err)
			}
			if got != nil {
				t.Errorf("Update returned a job with its error: %s", asJSON(got))
			}
			after, err := s.Get(ctx, before.ID)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !reflect.DeepEqual(after, before) {
				t.Errorf("aborted Update changed the job:\n%s\nwant\n%s", asJSON(after), asJSON(before))
			}
			un, err := s.Unfinished(ctx)
			if err != nil {
				t.Fatalf("Unfinished: %v", err)
			}
			if len(un) != 1 {
				t.Errorf("Unfinished after aborted Update: got %v, want [%s]", ids(un), before.ID)
			}
		})
	}
}

func TestUnfinished(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	jobs := makeJobs(t, s, 8)

	// A terminal job created as such never enters the index.
	done := gantry.NewJob(gantry.Spec{}, base.Add(time.Hour))
	done.State = gantry.StateSucceeded
	if err := s.Create(ctx, done); err != nil {
		t.Fatalf("Create: %v", err)
	}

	move(t, s, jobs[1].ID, gantry.StateBuilding)
	move(t, s, jobs[2].ID, gantry.StateCanceled)
	move(t, s, jobs[3].ID, gantry.StateBuilding)
	move(t, s, jobs[3].ID, gantry.StateRunning)
	move(t, s, jobs[4].ID, gantry.StateBuilding)
	move(t, s, jobs[4].ID, gantry.StateFailed)
	move(t, s, jobs[5].ID, gantry.StateBuilding)
	move(t, s, jobs[5].ID, gantry.StateRunning)
	move(t, s, jobs[5].ID, gantry.StateRejected)
	move(t, s, jobs[6].ID, gantry.StateBuilding)
	move(t, s, jobs[6].ID, gantry.StateRunning)
	move(t, s, jobs[6].ID, gantry.StatePushing)

	got, err := s.Unfinished(ctx)
	if err != nil {
		t.Fatalf("Unfinished: %v", err)
	}
	want := []string{jobs[0].ID, jobs[1].ID, jobs[3].ID, jobs[6].ID, jobs[7].ID}
	if !slices.Equal(ids(got), want) {
		t.Errorf("Unfinished: got %v, want %v", ids(got), want)
	}
	for _, j := range got {
		if j.State.Terminal() {
			t.Errorf("Unfinished returned %s in terminal state %s", j.ID, j.State)
		}
	}
}

func TestList(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	jobs := makeJobs(t, s, 25)
	newestFirst := ids(jobs)
	slices.Reverse(newestFirst)

	// Some running, some failed, the rest queued.
	var running, failedOrRunning []string
	for i, id := range newestFirst {
		switch i % 3 {
		case 0:
			move(t, s, id, gantry.StateBuilding)
			move(t, s, id, gantry.StateRunning)
			running = append(running, id)
			failedOrRunning = append(failedOrRunning, id)
		case 1:
			move(t, s, id, gantry.StateFailed)
			failedOrRunning = append(failedOrRunning, id)
		}
	}

	tests := []struct {
		name   string
		limit  int
		states []gantry.State
		want   []string
	}{
		{"default limit", 0, nil, newestFirst},
		{"negative limit", -1, nil, newestFirst},
		{"one per page", 1, nil, newestFirst},
		{"pages of 7", 7, nil, newestFirst},
		{"limit divides the count", 5, nil, newestFirst},
		{"limit equals the count", 25, nil, newestFirst},
		{"limit above the count", 26, nil, newestFirst},
		{"active state", 3, []gantry.State{gantry.StateRunning}, running},
		{"active state, one page", 0, []gantry.State{gantry.StateRunning}, running},
		{"mixed states", 4, []gantry.State{gantry.StateFailed, gantry.StateRunning}, failedOrRunning},
		{"no match", 4, []gantry.State{gantry.StatePushing}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			before := ""
			for page := 0; ; page++ {
				if page > 30 {
					t.Fatalf("more than 30 pages; so far %v", got)
				}
				o := gantry.JobFilter{Limit: tt.limit, Before: before, States: tt.states}
				jobs, next, err := s.List(ctx, o)
				if err != nil {
					t.Fatalf("List(%+v): %v", o, err)
				}
				if tt.limit > 0 && len(jobs) > tt.limit {
					t.Errorf("List(%+v): got %d jobs, more than the limit", o, len(jobs))
				}
				if len(jobs) == 0 && (page > 0 || next != "") {
					// A cursor is given only when another job follows.
					t.Errorf("List(%+v): page %d is empty, next %q", o, page, next)
				}
				if next != "" && next != jobs[len(jobs)-1].ID {
					t.Errorf("List(%+v): next = %q, want the last job's ID %q", o, next, jobs[len(jobs)-1].ID)
				}
				for _, j := range jobs {
					if len(tt.states) > 0 && !slices.Contains(tt.states, j.State) {
						t.Errorf("List(%+v): job %s is %s", o, j.ID, j.State)
					}
				}
				got = append(got, ids(jobs)...)
				if next == "" {
					break
				}
				before = next
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("pages joined:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestListLimits(t *testing.T) {
	s := newStore(t)
	// A thousand commits each waiting on fsync would make this test slow
	// for no gain: what it checks is the page size, not durability.
	s.db.NoSync = true
	ctx := context.Background()
	makeJobs(t, s, 1005)
	tests := []struct {
		limit, want int
	}{
		{0, 100},
		{-5, 100},
		{10, 10},
		{1000, 1000},
		{5000, 1000},
	}
	for _, tt := range tests {
		jobs, next, err := s.List(ctx, gantry.JobFilter{Limit: tt.limit})
		if err != nil {
			t.Fatalf("List(Limit %d): %v", tt.limit, err)
		}
		if len(jobs) != tt.want || next == "" {
			t.Errorf("List(Limit %d): got %d jobs, next %q; want %d and a cursor", tt.limit, len(jobs), next, tt.want)
		}
	}
}

func TestListCursor(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	jobs := makeJobs(t, s, 5)
	tests := []struct {
		name   string
		before string
		want   []string
	}{
		{"existing ID", jobs[3].ID, ids(jobs[:3])},
		{"newer than every job", gantry.NewID(base.Add(time.Hour)), ids(jobs)},
		{"older than every job", "0000000000000000", nil},
		{"the oldest job", jobs[0].ID, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.List(ctx, gantry.JobFilter{Before: tt.before})
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			want := slices.Clone(tt.want)
			slices.Reverse(want)
			if !slices.Equal(ids(got), want) || next != "" {
				t.Errorf("List(Before %s): got %v, next %q; want %v, \"\"", tt.before, ids(got), next, want)
			}
		})
	}

	for _, o := range []gantry.JobFilter{
		{Before: "../etc/passwd"},
		{States: []gantry.State{"paused"}},
	} {
		if _, _, err := s.List(ctx, o); !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("List(%+v): got error %v, want kind %v", o, err, gantry.ErrInvalid)
		}
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gantry.db")
	ctx := context.Background()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	jobs := makeJobs(t, s, 6)
	full := fullJob()
	full.ID = gantry.NewID(base.Add(time.Hour))
	if err := s.Create(ctx, full); err != nil {
		t.Fatalf("Create: %v", err)
	}
	jobs = append(jobs, full)
	for i, to := range []gantry.State{gantry.StateBuilding, gantry.StateFailed, gantry.StateCanceled} {
		move(t, s, jobs[i].ID, to)
	}
	var want []*gantry.Job
	for _, j := range jobs {
		j, err := s.Get(ctx, j.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		want = append(want, j)
	}
	wantUnfinished, err := s.Unfinished(ctx)
	if err != nil {
		t.Fatalf("Unfinished: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, path)
	for _, w := range want {
		got, err := s.Get(ctx, w.ID)
		if err != nil {
			t.Fatalf("Get after reopen: %v", err)
		}
		if !reflect.DeepEqual(got, w) {
			t.Errorf("after reopen got\n%s\nwant\n%s", asJSON(got), asJSON(w))
		}
	}
	gotUnfinished, err := s.Unfinished(ctx)
	if err != nil {
		t.Fatalf("Unfinished: %v", err)
	}
	if !slices.Equal(ids(gotUnfinished), ids(wantUnfinished)) {
		t.Errorf("Unfinished after reopen: got %v, want %v", ids(gotUnfinished), ids(wantUnfinished))
	}
	listed, _, err := s.List(ctx, gantry.JobFilter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(listed) != len(want) {
		t.Errorf("List after reopen: got %d jobs, want %d", len(listed), len(want))
	}
	if v := schema(t, s.db); v != fmt.Sprint(SchemaVersion) {
		t.Errorf("schema after reopen: got %q, want %d", v, SchemaVersion)
	}
}

func schema(t *testing.T, db *bolt.DB) string {
	t.Helper()
	var v string
	err := db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	})
	if err != nil {
		t.Fatalf("read schema: %v", err)
	}
	return v
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gantry.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	newer := SchemaVersion + 1
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(fmt.Sprint(newer)))
	})
	if err != nil {
		t.Fatalf("set schema: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer file succeeded")
	}
	if !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("Open: got error %v, want kind %v", err, gantry.ErrInvalid)
	}
	for _, want := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("version %d", SchemaVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q does not say %q", err, want)
		}
	}

	// The refused file is left as it was.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	defer db.Close()
	if v := schema(t, db); v != fmt.Sprint(newer) {
		t.Errorf("schema after refused Open: got %q, want %d", v, newer)
	}
}

func TestOpenNotADataFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gantry.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not bbolt ", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a non-bbolt file succeeded")
	}
	if !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("Open: got error %v, want kind %v", err, gantry.ErrInvalid)
	}
}

func TestOpenInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gantry.db")
	open(t, path)
	s, err := Open(path)
	if err == nil {
		s.Close()
		t.Fatal("second Open of the same file succeeded")
	}
	if !errors.Is(err, gantry.ErrUnavailable) {
		t.Errorf("second Open: got error %v, want kind %v", err, gantry.ErrUnavailable)
	}
	if !strings.Contains(err.Error(), "in use by another gantryd") || !strings.Contains(err.Error(), path) {
		t.Errorf("second Open: error %q does not name the file and say it is in use", err)
	}
}

func TestConcurrentUpdates(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	jobs := makeJobs(t, s, 16)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			for _, to := range []gantry.State{gantry.StateBuilding, gantry.StateRunning} {
				_, err := s.Update(ctx, j.ID, func(j *gantry.Job) error {
					j.ContainerID = fmt.Sprintf("c%d", i)
					return j.Move(to, base)
				})
				if err != nil {
					t.Errorf("Update %s to %s: %v", j.ID, to, err)
				}
			}
		})
	}
	wg.Wait()
	for i, j := range jobs {
		got, err := s.Get(ctx, j.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if want := fmt.Sprintf("c%d", i); got.State != gantry.StateRunning || got.ContainerID != want {
			t.Errorf("job %d: got %s, container %q; want %s, %q", i, got.State, got.ContainerID, gantry.StateRunning, want)
		}
	}
	un, err := s.Unfinished(ctx)
	if err != nil {
		t.Fatalf("Unfinished: %v", err)
	}
	if !slices.Equal(ids(un), ids(jobs)) {
		t.Errorf("Unfinished: got %v, want %v", ids(un), ids(jobs))
	}
}

func TestInstance(t *testing.T) {
	dir := t.TempDir()
	pathA, pathB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	isID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	instance := func(s *Store) string {
		t.Helper()
		id, err := s.Instance()
		if err != nil {
			t.Fatalf("Instance: %v", err)
		}
		if !isID.MatchString(id) {
			t.Fatalf("Instance = %q, want 16 lowercase hex characters", id)
		}
		return id
	}

	a, err := Open(pathA)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	first := instance(a)
	if again := instance(a); again != first {
		t.Errorf("Instance changed from %s to %s on the same open file", first, again)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := instance(open(t, pathA)); got != first {
		t.Errorf("Instance after reopening = %s, want %s", got, first)
	}
	if other := instance(open(t, pathB)); other == first {
		t.Errorf("two data files have the same instance %s", first)
	}
}

// TestInstanceForAnOlderFile opens a file written before instance IDs: it
// gets one, kept from then on.
func TestInstanceForAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gantry.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	job := makeJobs(t, s, 1)[0]
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyInstance) }); err != nil {
		t.Fatalf("delete instance: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	id, err := s.Instance()
	if err != nil || len(id) != 16 {
		t.Fatalf("Instance of an older file = %q, %v; want a new 16-character ID", id, err)
	}
	if _, err := s.Get(context.Background(), job.ID); err != nil {
		t.Errorf("Get after the instance was added: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, err := open(t, path).Instance(); err != nil || got != id {
		t.Errorf("Instance after reopening = %q, %v; want %s", got, err, id)
	}
}

// Concurrent creates share transactions: each job is kept once with its
// one event, events are numbered without gap or repeat, and a create that
// fails (an ID taken) fails alone.
func TestConcurrentCreates(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	taken := makeJobs(t, s, 1)[0]
	const clients, each = 50, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	var created []string
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				j := gantry.NewJob(gantry.Spec{}, base.Add(time.Duration(c*each+i+1)*time.Second))
				if err := s.Create(ctx, j); err != nil {
					t.Errorf("Create: %v", err)
					continue
				}
				mu.Lock()
				created = append(created, j.ID)
				mu.Unlock()
				if i == each/2 {
					dup := *taken
					if err := s.Create(ctx, &dup); !errors.Is(err, gantry.ErrConflict) {
						t.Errorf("Create of a taken ID: %v, want ErrConflict", err)
					}
				}
			}
		})
	}
	wg.Wait()
	if len(created) != clients*each {
		t.Fatalf("%d creates succeeded, want %d", len(created), clients*each)
	}
	for _, id := range created {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("Get(%s): %v", id, err)
		}
	}
	var evs []gantry.Event
	for after := uint64(0); ; {
		page, err := s.Events(ctx, after, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		evs = append(evs, page...)
		after = page[len(page)-1].Seq
	}
	perJob := map[string]int{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has number %d: want numbers without gap or repeat", i, e.Seq)
		}
		perJob[e.Job]++
	}
	for _, id := range append(created, taken.ID) {
		if perJob[id] != 1 {
			t.Errorf("job %s has %d events, want 1", id, perJob[id])
		}
	}
	if len(perJob) != len(created)+1 {
		t.Errorf("events for %d jobs, want %d", len(perJob), len(created)+1)
	}

	// Once closed, a create is refused and nothing hangs.
	s.Close()
	if err := s.Create(ctx, gantry.NewJob(gantry.Spec{}, base)); err == nil {
		t.Errorf("Create after Close succeeded")
	}
}

func TestLastEvent(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if n, err := s.LastEvent(ctx); err != nil || n != 0 {
		t.Fatalf("LastEvent of an empty store = %d, %v; want 0", n, err)
	}
	makeJobs(t, s, 3)
	evs, err := s.Events(ctx, 0, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.LastEvent(ctx); err != nil || n != evs[len(evs)-1].Seq {
		t.Errorf("LastEvent = %d, %v; want the newest event's %d", n, err, evs[len(evs)-1].Seq)
	}
}

// TestRecordSizeBounded: no update grows a record past MaxRecordBytes (a job
// record once grew to 33 MB); the refused update changes nothing.
func TestRecordSizeBounded(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	j := gantry.NewJob(gantry.Spec{}, time.Now())
	if err := s.Create(ctx, j); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err := s.Update(ctx, j.ID, func(j *gantry.Job) error {
		for i := range 20000 {
			j.Pushes = append(j.Pushes, gantry.Push{Ref: fmt.Sprintf("127.0.0.1:5000/repo-%06d:%s", i, strings.Repeat("t", 64)), Digest: "sha256:" + strings.Repeat("0", 64)})
		}
		return nil
	})
	if !errors.Is(err, gantry.ErrTooLarge) {
		t.Fatalf("Update growing the record to megabytes: %v, want ErrTooLarge", err)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil || len(got.Pushes) != 0 {
		t.Errorf("after the refused update: %d pushes (%v), want the record unchanged", len(got.Pushes), err)
	}
	big := gantry.NewJob(gantry.Spec{}, time.Now())
	big.Inputs.Files = map[string]string{}
	for i := range 10000 {
		big.Inputs.Files[fmt.Sprintf("%0200d", i)] = "sha256:" + strings.Repeat("0", 64)
	}
	if err := s.Create(ctx, big); !errors.Is(err, gantry.ErrTooLarge) {
		t.Errorf("Create of a 3 MB record: %v, want ErrTooLarge", err)
	}
}
