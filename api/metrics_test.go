package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/gantry-ml/gantry"
)

func (f *fakeService) Metrics(ctx context.Context, id, name string) (gantry.Series, error) {
	if f.metrics == nil {
		return nil, errUnexpected
	}
	return f.metrics(ctx, id, name)
}

// metricsService serves job "done" with two series, job "new" with none
// (a nil Series); other jobs are unknown.
func metricsService() *fakeService {
	all := gantry.Series{
		"loss":     {{Step: 0, Value: 0.5}, {Step: 1, Value: 0.25}},
		"accuracy": {{Step: 0, Value: 0.9}},
	}
	return &fakeService{metrics: func(_ context.Context, id, name string) (gantry.Series, error) {
		switch {
		case id == "new":
			return nil, nil
		case id != "done":
			return nil, gantry.Errorf(gantry.ErrNotFound, "job %s: no such job", id)
		case name == "":
			return all, nil
		case gantry.CheckMetricName(name) != nil:
			return nil, gantry.CheckMetricName(name)
		}
		one := gantry.Series{}
		if pts, ok := all[name]; ok {
			one[name] = pts
		}
		return one, nil
	}}
}

func TestMetricsRoute(t *testing.T) {
	tests := []struct {
		path       string
		wantStatus int
		want       string // the body, for 200
	}{
		{"/v1/jobs/done/metrics", http.StatusOK, `{"accuracy":[{"step":0,"value":0.9}],"loss":[{"step":0,"value":0.5},{"step":1,"value":0.25}]}`},
		{"/v1/jobs/done/metrics?name=loss", http.StatusOK, `{"loss":[{"step":0,"value":0.5},{"step":1,"value":0.25}]}`},
		{"/v1/jobs/done/metrics?name=f1", http.StatusOK, `{}`},
		{"/v1/jobs/new/metrics", http.StatusOK, `{}`},
		{"/v1/jobs/done/metrics?name=9lives", http.StatusBadRequest, ""},
		{"/v1/jobs/nope/metrics", http.StatusNotFound, ""},
	}
	url := serveHTTP(t, metricsService())
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(url + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantStatus != http.StatusOK {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var got, want any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			json.Unmarshal([]byte(tc.want), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("body %s, want %s", body, tc.want)
			}
		})
	}
}

func TestClientMetrics(t *testing.T) {
	ctx := context.Background()
	c := serveClient(t, metricsService())
	got, err := c.Metrics(ctx, "done", "loss")
	want := gantry.Series{"loss": {{Step: 0, Value: 0.5}, {Step: 1, Value: 0.25}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Metrics(done, loss) = %v, %v; want %v", got, err, want)
	}
	if got, err := c.Metrics(ctx, "new", ""); err != nil || got == nil || len(got) != 0 {
		t.Errorf("Metrics(new) = %#v, %v; want an empty Series", got, err)
	}
	for id, kind := range map[string]error{"nope": gantry.ErrNotFound} {
		if _, err := c.Metrics(ctx, id, ""); !errors.Is(err, kind) {
			t.Errorf("Metrics(%s) = %v, want %v", id, err, kind)
		}
	}
	if _, err := c.Metrics(ctx, "done", "9lives"); !errors.Is(err, gantry.ErrInvalid) {
		t.Errorf("Metrics(done, 9lives) = %v, want ErrInvalid", err)
	}
}
