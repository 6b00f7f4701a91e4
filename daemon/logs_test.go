package daemon

import (
	"context"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gantry-ml/gantry"
)

// logsRunningJob returns a daemon (not running) with one job recorded as
// training, so that a follower of its files waits for more.
func logsRunningJob(t *testing.T) (*Daemon, string) {
	t.Helper()
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	j := pipeSubmit(t, rig.d, gantry.Spec{})
	pipeRecord(t, rig.st, j, nil, gantry.StateBuilding, gantry.StateRunning)
	return rig.d, j.ID
}

// A follower sees what is written to the job's log, or to its build
// status, as soon as it is written: woken by the write, not by a timer.
// The test runs in a synctest bubble, where synctest.Wait returns once
// every goroutine is blocked and the clock stands still meanwhile: a
// follower that only a timer would wake never sees the line.
func TestFollowerWokenByWrite(t *testing.T) {
	tests := []struct {
		name   string
		follow func(d *Daemon) func(ctx context.Context, id string, follow bool, w io.Writer) error
		writer func(t *testing.T, d *Daemon, id string) io.Writer
	}{
		{
			name:   "log",
			follow: func(d *Daemon) func(context.Context, string, bool, io.Writer) error { return d.Logs },
			writer: func(t *testing.T, d *Daemon, id string) io.Writer {
				logf, err := d.openLog(id)
				if err != nil {
					t.Fatalf("openLog: %v", err)
				}
				t.Cleanup(func() { logf.Close() })
				return logf.Output()
			},
		},
		{
			name:   "build status",
			follow: func(d *Daemon) func(context.Context, string, bool, io.Writer) error { return d.BuildStatus },
			writer: func(t *testing.T, d *Daemon, id string) io.Writer {
				f, err := os.Create(d.StatusPath(id))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				return d.notifying(f, d.StatusPath(id))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d, id := logsRunningJob(t)
				ctx, cancel := context.WithCancel(context.Background())
				var got pipeSyncBuffer
				res := make(chan error, 1)
				go func() { res <- tt.follow(d)(ctx, id, true, &got) }()
				synctest.Wait() // the follower has read what there is and waits

				w := tt.writer(t, d, id)
				for _, line := range []string{"step 1\n", "step 2\n"} {
					if _, err := io.WriteString(w, line); err != nil {
						t.Error(err)
					}
					synctest.Wait()
					if got := got.String(); got[max(0, len(got)-len(line)):] != line {
						t.Errorf("after writing %q the follower has %q, want it to end with the line", line, got)
						break
					}
				}
				cancel()
				if err := <-res; err != context.Canceled {
					t.Errorf("follower after its context ended: %v, want context.Canceled", err)
				}
			})
		})
	}
}

// A thousand followers of an idle job cost nothing while they wait: in a
// synctest bubble a minute of the (fake) clock passes at once when all are
// blocked, and not one reads the log again until it is written; then each
// reads once.
func TestIdleFollowersDoNotRead(t *testing.T) {
	const followers = 1000
	synctest.Test(t, func(t *testing.T) {
		d, id := logsRunningJob(t)
		var reads atomic.Int64
		d.onTailRead = func(string) { reads.Add(1) }
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, followers)
		for range followers {
			go func() { res <- d.Logs(ctx, id, true, io.Discard) }()
		}
		synctest.Wait()
		if n := reads.Load(); n != followers {
			t.Errorf("%d followers read the log %d times on start, want once each", followers, n)
		}

		time.Sleep(time.Minute) // the bubble's clock: no real time passes
		synctest.Wait()
		if n := reads.Load() - followers; n != 0 {
			t.Errorf("%d followers of an idle job read the log %d times in a minute, want 0", followers, n)
		}

		logf, err := d.openLog(id)
		if err == nil {
			logf.Linef("==> one line")
			logf.Close()
		} else {
			t.Errorf("openLog: %v", err)
		}
		synctest.Wait()
		if n := reads.Load(); n != 2*followers {
			t.Errorf("after one write the log was read %d times, want %d (once more each)", n, 2*followers)
		}
		cancel()
		for range followers {
			<-res
		}
	})
}
