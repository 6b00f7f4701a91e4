package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// fakePrune answers Prune as prune says (nil: an unexpected call).
type fakePrune struct {
	prune func(ctx context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error)
}

func (f *fakePrune) Prune(ctx context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error) {
	if f.prune == nil {
		return nil, errUnexpected
	}
	return f.prune(ctx, o)
}

// The client sends the options as given (nil bounds left out, for
// gantryd's policy) and reads the report back whole.
func TestClientPrune(t *testing.T) {
	ctx := context.Background()
	week := gantry.Duration(7 * 24 * time.Hour)
	fin := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := &gantry.PruneReport{DryRun: true, OlderThan: week, Keep: 2,
		Jobs:   []gantry.PrunedJob{{ID: "06h2p0mv3zqppwka", Name: "r/iris", State: gantry.StateFailed, Finished: &fin}},
		Files:  []gantry.PrunedFile{{Path: "/d/logs/06h2p0mv3zqppwka.log", Job: "06h2p0mv3zqppwka", Bytes: 10}},
		Images: []gantry.PrunedImage{{Ref: "gantry/job:06h2p0mv3zqppwka", ID: "sha256:ab", Job: "06h2p0mv3zqppwka", Bytes: 100}},
		Bytes:  110, Kept: 3, Problems: []string{"job x kept"},
	}
	var got []gantry.PruneOptions
	svc := &fakeService{}
	svc.prune = func(_ context.Context, o gantry.PruneOptions) (*gantry.PruneReport, error) {
		got = append(got, o)
		return want, nil
	}
	c := serveClient(t, svc)
	rep, err := c.Prune(ctx, gantry.PruneOptions{OlderThan: &week, Keep: new(int), DryRun: true})
	if err != nil || !reflect.DeepEqual(rep, want) {
		t.Errorf("Prune() = %+v, %v; want %+v", rep, err, want)
	}
	if _, err := c.Prune(ctx, gantry.PruneOptions{}); err != nil {
		t.Fatalf("Prune(policy): %v", err)
	}
	if len(got) != 2 || *got[0].OlderThan != week || *got[0].Keep != 0 || !got[0].DryRun || got[1].OlderThan != nil || got[1].Keep != nil {
		t.Errorf("the service saw %s", pruneOpts(got))
	}
	svc.prune = func(context.Context, gantry.PruneOptions) (*gantry.PruneReport, error) {
		return nil, gantry.Errorf(gantry.ErrInvalid, "bad")
	}
	if _, err := c.Prune(ctx, gantry.PruneOptions{}); !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("Prune() = %v, want ErrInvalid", err)
	}
}

func pruneOpts(os []gantry.PruneOptions) string {
	var b strings.Builder
	for _, o := range os {
		b.WriteString("{")
		if o.OlderThan != nil {
			b.WriteString("older_than=" + time.Duration(*o.OlderThan).String() + " ")
		}
		if o.Keep != nil {
			b.WriteString("keep set ")
		}
		b.WriteString("}")
	}
	return b.String()
}

// A body that is not the options, or asks a negative bound, is a 400 and
// never reaches the service.
func TestPruneRefusesBadBodies(t *testing.T) {
	svc := &fakeService{}
	s := httptest.NewServer(handler(svc, nil))
	defer s.Close()
	for _, body := range []string{`{"keep": -1}`, `{"older_than": "-1h"}`, `{"keep": "x"}`, `{"unknown": 1}`, `[`} {
		resp, err := http.Post(s.URL+"/v1/prune", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("body %s: status %d, want 400", body, resp.StatusCode)
		}
	}
}
