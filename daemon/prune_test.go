package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// pruneImage is an image read for a push that counts its releases.
type pruneImage struct {
	v1.Image
	released *atomic.Int64
}

func (i pruneImage) Close() error { i.released.Add(1); return nil }

// A job that ends prunes the blob cache once, from its own goroutine, after
// it has let go of every image it read; reading an image prunes nothing.
// What the prune freed, or why it failed, is in gantryd's log.
func TestFinishedJobPrunesTheBlobCache(t *testing.T) {
	tests := []struct {
		name    string
		freed   int64
		err     error
		wantLog string // "" means no line about pruning
	}{
		{name: "frees bytes", freed: 3 << 20, wantLog: "pruned the blob cache"},
		{name: "frees nothing", freed: 0},
		{name: "fails", err: errors.New("disk gone"), wantLog: "prune the blob cache"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pipeNewFakes(t)
			var released atomic.Int64
			f.source.img = pruneImage{Image: f.source.img, released: &released}
			f.engine.run = func(ctx context.Context, id string, out io.Writer) (runner.Exit, error) {
				fmt.Fprintln(out, "Model accuracy: 0.9")
				return runner.Exit{}, nil
			}
			// What a prune saw when it was called.
			type seen struct {
				state          gantry.State
				reads, release int64
			}
			var (
				mu     sync.Mutex
				prunes []seen
				d      *Daemon
				id     string
			)
			logs := &pipeSyncBuffer{}
			rig := pipeNewRig(t, 1, f, func(c *Config) {
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
				c.Prune = func() (int64, error) {
					j, err := d.Get(context.Background(), id)
					if err != nil {
						t.Errorf("Get(%s) from Prune: %v", id, err)
						return 0, err
					}
					mu.Lock()
					defer mu.Unlock()
					prunes = append(prunes, seen{j.State, int64(len(f.source.asked())), released.Load()})
					return tc.freed, tc.err
				}
			})
			d = rig.d
			id = pipeSubmit(t, d, gantry.Spec{Push: []string{"registry.example/iris:1"}}).ID
			stop := pipeRun(t, d)
			if j := pipeWait(t, d, id); j.State != gantry.StateSucceeded {
				t.Fatalf("job %s: state %s (%s), want succeeded", id, j.State, j.Error)
			}
			pipeEventually(t, "the job to prune", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(prunes) > 0
			})
			stop() // Run returns once every job goroutine has
			mu.Lock()
			defer mu.Unlock()
			if len(prunes) != 1 {
				t.Fatalf("%d prunes for one job, want 1: %+v", len(prunes), prunes)
			}
			p := prunes[0]
			if p.state != gantry.StateSucceeded {
				t.Errorf("the prune came with the job %s, want it after the job ended", p.state)
			}
			if p.reads == 0 || p.release != p.reads {
				t.Errorf("the prune came after %d image reads and %d releases, want it after every image read was released", p.reads, p.release)
			}
			log := logs.String()
			var lines []string
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "prune") {
					lines = append(lines, l)
				}
			}
			switch {
			case tc.wantLog == "" && len(lines) != 0:
				t.Errorf("log says %q, want nothing about a prune that freed nothing", lines)
			case tc.wantLog != "" && (len(lines) != 1 || !strings.Contains(lines[0], tc.wantLog) || !strings.Contains(lines[0], "job="+id)):
				t.Errorf("log says %q, want one line %q naming job %s", lines, tc.wantLog, id)
			case tc.err != nil && !strings.Contains(lines[0], tc.err.Error()):
				t.Errorf("log says %q, want the error %q", lines[0], tc.err)
			case tc.freed > 0 && !strings.Contains(lines[0], gantry.HumanBytes(tc.freed)):
				t.Errorf("log says %q, want what was freed, %s", lines[0], gantry.HumanBytes(tc.freed))
			}
		})
	}
}

// TestPushProgressIsTyped: a job's push progress is kept as typed records
// (JSON lines of gantry.Progress) beside its log, for watchers to draw a
// bar from; the log holds no progress text to parse.
func TestPushProgressIsTyped(t *testing.T) {
	ctx := context.Background()
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	pipeRun(t, rig.d)
	j := pipeSubmit(t, rig.d, gantry.Spec{Push: []string{"registry.example/iris:1"}})
	if end := pipeWait(t, rig.d, j.ID); end.State != gantry.StateSucceeded {
		t.Fatalf("state %s (%q), want succeeded", end.State, end.Error)
	}
	var buf bytes.Buffer
	if err := rig.d.Progress(ctx, j.ID, true, &buf); err != nil {
		t.Fatalf("Progress: %v", err)
	}
	var got []gantry.Progress
	dec := json.NewDecoder(&buf)
	for {
		var p gantry.Progress
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("progress is not JSON lines of gantry.Progress: %v", err)
		}
		got = append(got, p)
	}
	// The reference and the job tag, each in two records, the last whole.
	if len(got) != 4 || got[1].Digest == "" || got[1].Current != got[1].Total || got[3].Ref != "registry.example/iris:job-"+j.ID {
		t.Errorf("progress records %+v, want two for each of the two references, each ending with its digest", got)
	}
	var log bytes.Buffer
	if err := rig.d.Logs(ctx, j.ID, false, &log); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "progress ") || strings.Contains(log.String(), "pushing: ") {
		t.Errorf("the log holds progress text:\n%s", log.String())
	}
}
