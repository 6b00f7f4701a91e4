package daemon

import (
	"context"
	"slices"
	"testing"

	"github.com/gantry-ml/gantry"
)

// A follower of one job's events gets that job's, none of the others', and
// its stream ends with the job's end. Other jobs' changes wake it (they
// share the store's signal), and what it reads on from is past them.
func TestEventsOfOneJobEndWithIt(t *testing.T) {
	r := pipeNewRig(t, 1, pipeNewFakes(t))
	ctx := context.Background()
	mine, other := gantry.NewJob(gantry.Spec{}, r.d.now()), gantry.NewJob(gantry.Spec{}, r.d.now())
	for _, j := range []*gantry.Job{mine, other} {
		if err := r.d.store.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	first := make(chan struct{})
	done := make(chan error, 1)
	var got []gantry.Event
	go func() {
		done <- r.d.Events(ctx, 0, mine.ID, true, func(e *gantry.Event) error {
			if e == nil {
				return nil
			}
			if got = append(got, *e); len(got) == 1 {
				close(first)
			}
			return nil
		})
	}()
	pipeReceive(t, "the first event", first)
	for i := range 5 {
		a := float64(i) / 10
		if _, err := r.d.store.Update(ctx, other.ID, func(j *gantry.Job) error {
			j.Metrics.Accuracy = &a
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, to := range []gantry.State{gantry.StateBuilding, gantry.StateCanceled} {
		if _, err := r.d.move(ctx, mine.ID, to, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := pipeReceive(t, "the stream's end", done); err != nil {
		t.Fatalf("Events: %v", err)
	}
	var states []gantry.State
	for _, e := range got {
		if e.Job != mine.ID {
			t.Errorf("got an event of job %s", e.Job)
		}
		states = append(states, e.State)
	}
	if want := []gantry.State{gantry.StateQueued, gantry.StateBuilding, gantry.StateCanceled}; !slices.Equal(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
}
