package integration

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

// The event stream delivers every transition of a real Iris job in order,
// and a client that reconnects with the last event ID misses nothing.
func TestEventStreamOfAnIrisJob(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	app := filepath.Join(t.TempDir(), "ml-docker-app")
	d.mustGantry("init", "--base", base, app)
	cl, err := api.NewClient("unix://" + d.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	id := d.submit(app, "--push", uniqueRef(t), "--min-accuracy", "0.9")

	// First connection: take three events, then hang up.
	var got []gantry.Event
	errEnough := errors.New("enough")
	err = cl.Events(ctx, 0, "", true, func(e gantry.Event) error {
		got = append(got, e)
		if len(got) == 3 {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("first connection: %v", err)
	}
	// Reconnect from the last event seen, for this job, until it ends.
	err = cl.Events(ctx, got[len(got)-1].Seq, id, true, func(e gantry.Event) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatalf("second connection: %v", err)
	}

	j := d.inspect(id)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s), want succeeded", j.State, j.Error)
	}
	type step struct {
		typ   string
		state gantry.State
	}
	want := []step{
		{gantry.EventState, gantry.StateQueued},
		{gantry.EventState, gantry.StateBuilding},
		{gantry.EventState, gantry.StateRunning},
		{gantry.EventAccuracy, ""},
		{gantry.EventState, gantry.StatePushing},
		{gantry.EventPush, ""}, // the reference asked for
		{gantry.EventPush, ""}, // the job's immutable tag
		{gantry.EventState, gantry.StateSucceeded},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(got), len(want), got)
	}
	for i, e := range got {
		if e.Job != id || e.Type != want[i].typ || e.State != want[i].state {
			t.Errorf("event %d: %s %s %s, want %s %s", i, e.Job, e.Type, e.State, want[i].typ, want[i].state)
		}
		if i > 0 && e.Seq != got[i-1].Seq+1 {
			t.Errorf("event %d has seq %d after %d: one was missed or repeated", i, e.Seq, got[i-1].Seq)
		}
	}
	if a := got[3].Accuracy; a == nil || j.Metrics.Accuracy == nil || *a != *j.Metrics.Accuracy {
		t.Errorf("accuracy event %v, record %v", a, j.Metrics.Accuracy)
	}
	for i, k := range []int{5, 6} {
		if p := got[k].Push; p == nil || len(j.Pushes) != 2 || *p != j.Pushes[i] {
			t.Errorf("push event %d: %+v, record %+v", k, p, j.Pushes)
		}
	}
}
