package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// fakeSweeps is the sweep part of fakeService; a nil method fails.
type fakeSweeps struct {
	submitSweep func(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, tar io.Reader) (*gantry.Sweep, error)
	getSweep    func(ctx context.Context, id string) (*gantry.SweepView, error)
	listSweeps  func(ctx context.Context, limit int) ([]*gantry.Sweep, error)
	cancelSweep func(ctx context.Context, id string) (*gantry.Sweep, error)
}

var errNoFake = errors.New("not faked")

func (f fakeSweeps) SubmitSweep(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, tar io.Reader) (*gantry.Sweep, error) {
	if f.submitSweep == nil {
		return nil, errNoFake
	}
	return f.submitSweep(ctx, spec, secrets, tar)
}

func (f fakeSweeps) GetSweep(ctx context.Context, id string) (*gantry.SweepView, error) {
	if f.getSweep == nil {
		return nil, errNoFake
	}
	return f.getSweep(ctx, id)
}

func (f fakeSweeps) ListSweeps(ctx context.Context, limit int) ([]*gantry.Sweep, error) {
	if f.listSweeps == nil {
		return nil, errNoFake
	}
	return f.listSweeps(ctx, limit)
}

func (f fakeSweeps) CancelSweep(ctx context.Context, id string) (*gantry.Sweep, error) {
	if f.cancelSweep == nil {
		return nil, errNoFake
	}
	return f.cancelSweep(ctx, id)
}

func TestSweepRoutes(t *testing.T) {
	ctx := context.Background()
	var (
		gotSpec    gantry.SweepSpec
		gotSecrets map[string]string
		gotBody    string
		gotLimit   int
	)
	svc := &fakeService{lastEvent: 42, fakeSweeps: fakeSweeps{
		submitSweep: func(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, tar io.Reader) (*gantry.Sweep, error) {
			b, _ := io.ReadAll(tar)
			gotSpec, gotSecrets, gotBody = spec, secrets, string(b)
			return &gantry.Sweep{ID: "s1", State: gantry.StateRunning, Jobs: []string{"j1", "j2"}}, nil
		},
		getSweep: func(ctx context.Context, id string) (*gantry.SweepView, error) {
			if id != "s1" {
				return nil, gantry.Errorf(gantry.ErrNotFound, "no such sweep")
			}
			return &gantry.SweepView{Sweep: gantry.Sweep{ID: id, Winner: "j2"}, Objective: "accuracy:max",
				Points: []gantry.SweepPoint{{Job: "j2", Passed: true}, {Job: "j1"}}}, nil
		},
		listSweeps: func(ctx context.Context, limit int) ([]*gantry.Sweep, error) {
			gotLimit = limit
			return []*gantry.Sweep{{ID: "s2"}, {ID: "s1"}}, nil
		},
		cancelSweep: func(ctx context.Context, id string) (*gantry.Sweep, error) {
			return &gantry.Sweep{ID: id, State: gantry.StateCanceled}, nil
		},
	}}
	c := serveClient(t, svc)
	spec := gantry.SweepSpec{Job: gantry.Spec{Push: []string{"r/x:1"}}, Params: []gantry.Param{{Name: "LR", Values: []string{"0.1", "0.01"}}}}
	sw, err := c.SubmitSweep(ctx, spec, map[string]string{"TOKEN": "s3cret"}, strings.NewReader("TAR"))
	if err != nil || sw.ID != "s1" || len(sw.Jobs) != 2 {
		t.Fatalf("SubmitSweep: %+v, %v", sw, err)
	}
	if len(gotSpec.Params) != 1 || gotSpec.Params[0].Values[1] != "0.01" || gotSpec.Job.Push[0] != "r/x:1" || gotSecrets["TOKEN"] != "s3cret" || gotBody != "TAR" {
		t.Errorf("the service got %+v, %v, %q", gotSpec, gotSecrets, gotBody)
	}
	v, err := c.GetSweep(ctx, "s1")
	if err != nil || v.Sweep.Winner != "j2" || len(v.Points) != 2 || v.Points[0].Job != "j2" {
		t.Errorf("GetSweep: %+v, %v", v, err)
	}
	if _, err := c.GetSweep(ctx, "nope"); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("GetSweep unknown: %v, want ErrNotFound", err)
	}
	l, err := c.ListSweeps(ctx, 5)
	if err != nil || len(l.Sweeps) != 2 || l.Sweeps[0].ID != "s2" || l.EventSeq != 42 || gotLimit != 5 {
		t.Errorf("ListSweeps: %+v, %v (limit %d)", l, err, gotLimit)
	}
	if sw, err := c.CancelSweep(ctx, "s1"); err != nil || sw.State != gantry.StateCanceled {
		t.Errorf("CancelSweep: %+v, %v", sw, err)
	}
}

func TestSubmitSweepRefusesUnknownKeys(t *testing.T) {
	url := serveHTTP(t, &fakeService{})
	resp, err := http.Post(url+`/v1/sweeps?spec={"params":[],"parms":1}`, "application/x-tar", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status: got %d, want 400", resp.StatusCode)
	}
}
