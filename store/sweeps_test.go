package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

func TestSweeps(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gantry.db")
	s := open(t, path)
	now := time.Now()
	var ids []string
	for i := range 3 {
		sw := &gantry.Sweep{ID: gantry.NewID(now.Add(time.Duration(i) * time.Millisecond)), State: gantry.StateRunning, Created: now}
		jobs := []*gantry.Job{gantry.NewJob(gantry.Spec{}, now), gantry.NewJob(gantry.Spec{}, now)}
		for _, j := range jobs {
			j.Sweep = sw.ID
			sw.Jobs = append(sw.Jobs, j.ID)
		}
		if err := s.CreateSweep(ctx, sw, jobs); err != nil {
			t.Fatalf("CreateSweep: %v", err)
		}
		ids = append(ids, sw.ID)
		if err := s.CreateSweep(ctx, sw, nil); !errors.Is(err, gantry.ErrConflict) {
			t.Errorf("CreateSweep again: got %v, want ErrConflict", err)
		}
	}
	// The points are jobs, unfinished, with their creation events.
	un, err := s.Unfinished(ctx)
	if err != nil || len(un) != 6 || un[0].Sweep != ids[0] {
		t.Fatalf("Unfinished: %d jobs, %v; want the 6 points", len(un), err)
	}
	if _, err := s.UpdateSweep(ctx, ids[1], func(sw *gantry.Sweep) error {
		sw.State, sw.Winner = gantry.StateSucceeded, sw.Jobs[1]
		return nil
	}); err != nil {
		t.Fatalf("UpdateSweep: %v", err)
	}
	if _, err := s.UpdateSweep(ctx, ids[1], func(sw *gantry.Sweep) error { sw.ID = "x"; return nil }); !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("UpdateSweep changing the ID: got %v, want ErrInvalid", err)
	}
	s.Close()
	s = open(t, path) // it is all on disk
	defer s.Close()
	got, err := s.GetSweep(ctx, ids[1])
	if err != nil || got.State != gantry.StateSucceeded || got.Winner != got.Jobs[1] || len(got.Jobs) != 2 {
		t.Fatalf("GetSweep: %+v, %v", got, err)
	}
	all, err := s.ListSweeps(ctx, 0, false)
	if err != nil || len(all) != 3 || all[0].ID != ids[2] || all[2].ID != ids[0] {
		t.Errorf("ListSweeps: %v, %v; want 3, newest first", all, err)
	}
	if un, _ := s.ListSweeps(ctx, 0, true); len(un) != 2 {
		t.Errorf("unfinished sweeps: %d, want 2", len(un))
	}
	if two, _ := s.ListSweeps(ctx, 2, false); len(two) != 2 {
		t.Errorf("limit 2: got %d", len(two))
	}
	if _, err := s.GetSweep(ctx, "nope"); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("GetSweep unknown: %v, want ErrNotFound", err)
	}
	evs, err := s.Events(ctx, 0, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var sweepEvs int
	for _, e := range evs {
		if e.Type == gantry.EventSweep {
			sweepEvs++
		}
	}
	if sweepEvs != 4 { // 3 created, 1 ended
		t.Errorf("sweep events: %d, want 4", sweepEvs)
	}
}
