package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// Delete removes finished jobs' records and events, leaves one "removed"
// event each numbered after everything before, and refuses a job that has
// not finished, removing nothing then.
func TestDelete(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	jobs := makeJobs(t, s, 3)
	move(t, s, jobs[0].ID, gantry.StateCanceled)
	move(t, s, jobs[1].ID, gantry.StateCanceled)
	before, err := s.LastEvent(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := s.Delete(ctx, []string{jobs[0].ID, jobs[2].ID}); !errors.Is(err, gantry.ErrConflict) {
		t.Fatalf("Delete of a queued job: err %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, jobs[0].ID); err != nil {
		t.Fatalf("after a refused Delete, Get(%s): %v, want the record kept", jobs[0].ID, err)
	}

	got, err := s.Delete(ctx, []string{jobs[0].ID, jobs[1].ID, jobs[0].ID, "0000000000000000"})
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if want := []string{jobs[0].ID, jobs[1].ID}; !slices.Equal(got, want) {
		t.Errorf("Delete removed %v, want %v", got, want)
	}
	for _, j := range jobs[:2] {
		if _, err := s.Get(ctx, j.ID); !errors.Is(err, gantry.ErrNotFound) {
			t.Errorf("Get(%s) after Delete: %v, want ErrNotFound", j.ID, err)
		}
	}
	list, _, err := s.List(ctx, gantry.JobFilter{})
	if err != nil || len(list) != 1 || list[0].ID != jobs[2].ID {
		t.Errorf("List after Delete: %v %v, want only %s", ids(list), err, jobs[2].ID)
	}
	evs, err := s.Events(ctx, 0, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, e := range evs {
		switch {
		case e.Type == gantry.EventRemoved:
			if e.Seq <= before {
				t.Errorf("removed event %d numbered before the last event %d", e.Seq, before)
			}
			removed = append(removed, e.Job)
		case e.Job != jobs[2].ID:
			t.Errorf("event %+v of a removed job is still recorded", e)
		}
	}
	if want := []string{jobs[0].ID, jobs[1].ID}; !slices.Equal(removed, want) {
		t.Errorf("removed events for %v, want %v", removed, want)
	}
	last, _ := s.LastEvent(ctx)
	if last != before+2 {
		t.Errorf("LastEvent %d, want %d (two removed events after %d)", last, before+2, before)
	}

	// Run again: nothing left to remove, no event.
	if got, err := s.Delete(ctx, []string{jobs[0].ID}); err != nil || len(got) != 0 {
		t.Errorf("Delete again: %v %v, want nothing removed", got, err)
	}
	if again, _ := s.LastEvent(ctx); again != last {
		t.Errorf("LastEvent after a Delete that removed nothing: %d, want %d", again, last)
	}
}

// A finished sweep goes with its last point, its events with it, and one
// removed event names it.
func TestDeleteSweep(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now()
	sw := &gantry.Sweep{ID: gantry.NewID(now), State: gantry.StateRunning, Created: now}
	jobs := []*gantry.Job{gantry.NewJob(gantry.Spec{}, now), gantry.NewJob(gantry.Spec{}, now)}
	for _, j := range jobs {
		j.Sweep = sw.ID
		sw.Jobs = append(sw.Jobs, j.ID)
	}
	if err := s.CreateSweep(ctx, sw, jobs); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		move(t, s, j.ID, gantry.StateCanceled)
	}
	if _, err := s.UpdateSweep(ctx, sw.ID, func(sw *gantry.Sweep) error { sw.State = gantry.StateCanceled; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, []string{jobs[0].ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSweep(ctx, sw.ID); err != nil {
		t.Fatalf("GetSweep with a point left: %v", err)
	}
	if _, err := s.Delete(ctx, []string{jobs[1].ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSweep(ctx, sw.ID); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("GetSweep after its last point went: %v, want ErrNotFound", err)
	}
	evs, err := s.Events(ctx, 0, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Type+":"+e.Job+e.Sweep)
	}
	want := []string{gantry.EventRemoved + ":" + jobs[0].ID, gantry.EventRemoved + ":" + jobs[1].ID, gantry.EventRemoved + ":" + sw.ID}
	if !slices.Equal(got, want) {
		t.Errorf("events after the sweep went: %v, want %v", got, want)
	}
}
