package metrics

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/store"
)

// storeSource reads the events of a real store without following them.
type storeSource struct{ *store.Store }

func (s storeSource) Events(ctx context.Context, after uint64, job string, follow bool, send func(*gantry.Event) error) error {
	evs, err := s.Store.Events(ctx, after, job, 0)
	if err != nil {
		return err
	}
	for i := range evs {
		if err := send(&evs[i]); err != nil {
			return err
		}
	}
	return nil
}

// scrape returns the metric families the handler serves, parsed with
// Prometheus's own text parser.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("the metrics do not parse: %v\n%s", err, rec.Body.String())
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.Metric {
		match := true
		for _, l := range m.Label {
			if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s with labels %v", name, labels)
	return 0
}

// run makes a job go through the given states with the store, as the daemon
// would, setting accuracy and pushes on the way.
func run(t *testing.T, st *store.Store, ref string, acc float64, end gantry.State) *gantry.Job {
	t.Helper()
	ctx := context.Background()
	spec := gantry.Spec{}
	if ref != "" {
		spec.Push = []string{ref}
	}
	j := gantry.NewJob(spec, time.Now())
	if err := st.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	step := func(fn func(*gantry.Job) error) {
		t.Helper()
		if _, err := st.Update(ctx, j.ID, fn); err != nil {
			t.Fatal(err)
		}
	}
	step(func(j *gantry.Job) error { return j.Move(gantry.StateBuilding, now) })
	step(func(j *gantry.Job) error { return j.Move(gantry.StateRunning, now.Add(2*time.Second)) })
	step(func(j *gantry.Job) error { j.Metrics.Accuracy = &acc; return nil })
	if end == gantry.StateSucceeded && ref != "" {
		step(func(j *gantry.Job) error { return j.Move(gantry.StatePushing, now.Add(5*time.Second)) })
		step(func(j *gantry.Job) error {
			j.Pushes = []gantry.Push{{Ref: ref + ":latest", Digest: "sha256:abc", Bytes: 1000}}
			return nil
		})
	}
	step(func(j *gantry.Job) error { return j.Move(end, now.Add(8*time.Second)) })
	return j
}

func TestMetricsCountWhatRan(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "gantry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	run(t, st, "127.0.0.1:5000/iris", 0.97, gantry.StateSucceeded)
	run(t, st, "127.0.0.1:5000/iris", 0.93, gantry.StateSucceeded)
	run(t, st, "127.0.0.1:5000/iris", 0.50, gantry.StateRejected)
	run(t, st, "", 0.90, gantry.StateFailed)
	queued := gantry.NewJob(gantry.Spec{}, time.Now())
	if err := st.Create(context.Background(), queued); err != nil {
		t.Fatal(err)
	}

	m := New(storeSource{st})
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gantry_jobs", map[string]string{"state": "succeeded"}, 2},
		{"gantry_jobs", map[string]string{"state": "rejected"}, 1},
		{"gantry_jobs", map[string]string{"state": "failed"}, 1},
		{"gantry_jobs", map[string]string{"state": "queued"}, 1},
		{"gantry_jobs", map[string]string{"state": "running"}, 0},
		{"gantry_jobs_finished_total", map[string]string{"state": "succeeded"}, 2},
		{"gantry_jobs_finished_total", map[string]string{"state": "canceled"}, 0},
		{"gantry_pushes_total", nil, 2},
		{"gantry_pushed_bytes_total", nil, 2000},
		{"gantry_job_phase_duration_seconds", map[string]string{"phase": "build"}, 4},
		{"gantry_job_phase_duration_seconds", map[string]string{"phase": "push"}, 2},
		// The last finished job of the image was rejected at 0.50.
		{"gantry_last_accuracy_ratio", map[string]string{"image": "127.0.0.1:5000/iris"}, 0.5},
		{"gantry_last_accuracy_ratio", map[string]string{"image": "(no push)"}, 0.9},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Durations are what the records say: build 2 s each.
	h := fams["gantry_job_phase_duration_seconds"]
	for _, mt := range h.Metric {
		if mt.Label[0].GetValue() == "build" && mt.Histogram.GetSampleSum() != 8 {
			t.Errorf("build durations sum to %v s, want 8", mt.Histogram.GetSampleSum())
		}
	}
}

// Collectors registered from outside are served with the rest; one whose
// name is taken is refused.
func TestRegister(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "gantry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := New(storeSource{st})
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_test_layers_total", Help: "test"})
	c.Add(3)
	if err := m.Register(c); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if got := value(t, scrape(t, m), "gantry_test_layers_total", nil); got != 3 {
		t.Errorf("gantry_test_layers_total = %v, want 3", got)
	}
	again := prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_test_layers_total", Help: "test"})
	if err := m.Register(again); err == nil {
		t.Errorf("Register of a taken name succeeded")
	}
}
