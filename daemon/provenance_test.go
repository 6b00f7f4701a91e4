package daemon

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// resolveRecorder is a pipePusher that records the references it is asked
// to resolve: each would be a call to a registry.
type resolveRecorder struct {
	*pipePusher
	asked []string
}

func (r *resolveRecorder) Resolve(ctx context.Context, ref string) (string, error) {
	r.asked = append(r.asked, ref)
	return r.pipePusher.Resolve(ctx, ref)
}

func TestHistoryAsksOnlyRegistriesJobsPushedTo(t *testing.T) {
	f := pipeNewFakes(t)
	rig := pipeNewRig(t, 1, f)
	rec := &resolveRecorder{pipePusher: f.pusher}
	rig.d.pusher = rec
	const digest = "sha256:" + "1111111111111111111111111111111111111111111111111111111111111111"
	f.pusher.tags = map[string]string{"127.0.0.1:5000/iris:champion": digest}

	pushed := pipeRecord(t, rig.st, gantry.NewJob(gantry.Spec{Push: []string{"127.0.0.1:5000/iris:v1"}}, time.Now()), func(j *gantry.Job) {
		j.Pushes = []gantry.Push{{Ref: "127.0.0.1:5000/iris:v1", Digest: digest}}
	}, gantry.StateBuilding, gantry.StateRunning, gantry.StatePushing, gantry.StateSucceeded)
	// A job asked to push to a registry, but failed before it pushed.
	failed := pipeRecord(t, rig.st, gantry.NewJob(gantry.Spec{Push: []string{"10.9.9.9:5000/x:latest"}}, time.Now()), nil,
		gantry.StateBuilding, gantry.StateFailed)

	cases := []struct {
		name      string
		wantJobs  []string
		wantAsked []string
		champion  bool
	}{
		{"127.0.0.1:5000/iris", []string{pushed.ID}, []string{"127.0.0.1:5000/iris:champion"}, true},
		{"10.0.0.5:22/anything", nil, nil, false},
		{"127.0.0.1:22/iris", nil, nil, false},
		{"127.0.0.1:5000/other", nil, nil, false},
		{"10.9.9.9:5000/x", []string{failed.ID}, nil, false},
		{"metadata.internal:80/x", nil, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec.asked = nil
			h, err := rig.d.History(context.Background(), c.name, "champion")
			if err != nil {
				t.Fatalf("History(%s): %v", c.name, err)
			}
			var jobs []string
			for _, e := range h {
				jobs = append(jobs, e.Job)
				if e.Champion != c.champion {
					t.Errorf("job %s: champion %v; want %v", e.Job, e.Champion, c.champion)
				}
			}
			if !slices.Equal(jobs, c.wantJobs) {
				t.Errorf("jobs %v; want %v", jobs, c.wantJobs)
			}
			if !slices.Equal(rec.asked, c.wantAsked) {
				t.Errorf("registry asked to resolve %q; want %q", rec.asked, c.wantAsked)
			}
		})
	}
}
