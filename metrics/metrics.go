// Package metrics exposes gantryd's Prometheus metrics: jobs by state,
// phase durations, pushes and pushed bytes, and the last accuracy per image
// name. It reads the job event stream from its start, so its counters and
// histograms cover every job the data file has seen, across restarts.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gantry-ml/gantry"
)

// source is what the metrics read: the event stream, the records, and the
// count of jobs per state.
type source interface {
	Events(ctx context.Context, after uint64, job string, follow bool, send func(*gantry.Event) error) error
	Get(ctx context.Context, id string) (*gantry.Job, error)
	Counts(ctx context.Context) (map[gantry.State]int, error)
}

// Metrics holds gantryd's metrics.
type Metrics struct {
	src      source
	reg      *prometheus.Registry
	finished *prometheus.CounterVec
	phases   *prometheus.HistogramVec
	pushes   prometheus.Counter
	bytes    prometheus.Counter
	accuracy *prometheus.GaugeVec
}

// New returns the metrics of src; Run keeps them current.
func New(src source) *Metrics {
	m := &Metrics{
		src: src,
		reg: prometheus.NewRegistry(),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_jobs_finished_total",
			Help: "Jobs that reached a terminal state, by state.",
		}, []string{"state"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gantry_job_phase_duration_seconds",
			Help:    "How long each phase of a finished job took: build, run (training) and push.",
			Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
		}, []string{"phase"}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_pushes_total",
			Help: "Images pushed to a reference.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_pushed_bytes_total",
			Help: "Bytes of the images pushed (blobs the registry already had count too).",
		}),
		accuracy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gantry_last_accuracy_ratio",
			Help: "The accuracy of the last finished job of each image name (the repository of its first push reference).",
		}, []string{"image"}),
	}
	for _, s := range gantry.States {
		if s.Terminal() {
			m.finished.WithLabelValues(string(s))
		}
	}
	m.reg.MustRegister(m.finished, m.phases, m.pushes, m.bytes, m.accuracy, &stateCollector{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Register adds collectors kept elsewhere (the push path's) to the metrics.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Run follows the event stream from its start until ctx ends.
func (m *Metrics) Run(ctx context.Context) error {
	err := m.src.Events(ctx, 0, "", true, func(e *gantry.Event) error {
		if e != nil {
			m.observe(ctx, e)
		}
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (m *Metrics) observe(ctx context.Context, e *gantry.Event) {
	switch e.Type {
	case gantry.EventPush:
		m.pushes.Inc()
		if e.Push != nil {
			m.bytes.Add(float64(e.Push.Bytes))
		}
	case gantry.EventState:
		if !e.State.Terminal() {
			return
		}
		m.finished.WithLabelValues(string(e.State)).Inc()
		j, err := m.src.Get(ctx, e.Job)
		if err != nil {
			return
		}
		for phase, p := range map[string]gantry.Phase{"build": j.Times.Build, "run": j.Times.Run, "push": j.Times.Push} {
			if p.Started != nil && p.Finished != nil {
				m.phases.WithLabelValues(phase).Observe(p.Finished.Sub(*p.Started).Seconds())
			}
		}
		if j.Metrics.Accuracy != nil {
			name := j.Name()
			if name == "" {
				name = "(no push)"
			}
			m.accuracy.WithLabelValues(name).Set(*j.Metrics.Accuracy)
		}
	}
}

// stateCollector reports the jobs in each state at scrape time.
type stateCollector struct{ src source }

var jobsDesc = prometheus.NewDesc("gantry_jobs", "Jobs by state, now.", []string{"state"}, nil)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- jobsDesc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	counts, err := c.src.Counts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(jobsDesc, err)
		return
	}
	for _, s := range gantry.States {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
