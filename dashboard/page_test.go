package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gantry-ml/gantry"
)

// chromium is Debian's package, which make services installs.
const chromium = "/usr/bin/chromium"

// fakeGantry serves the API's reads the page uses, from records the test
// changes, and an event stream the test writes to.
type fakeGantry struct {
	mu     sync.Mutex
	jobs   []*gantry.Job // oldest first
	series map[string]gantry.Series
	sweeps []gantry.SweepView
	seq    uint64
	subs   []chan event
	log    chan string
	done   chan struct{}
}

func (f *fakeGantry) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := make([]*gantry.Job, 0, len(f.jobs))
		for i := len(f.jobs) - 1; i >= 0; i-- {
			list = append(list, f.jobs[i])
		}
		reply(w, map[string]any{"jobs": list, "event_seq": f.seq})
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, j := range f.jobs {
			if j.ID == r.PathValue("id") {
				reply(w, j)
				return
			}
		}
		http.NotFound(w, r)
	})
	mux.HandleFunc("GET /v1/jobs/{id}/metrics", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		reply(w, f.series[r.PathValue("id")])
	})
	mux.HandleFunc("GET /v1/jobs/{id}/logs", f.logs)
	mux.HandleFunc("GET /v1/sweeps", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		list := []gantry.Sweep{}
		for _, v := range f.sweeps {
			list = append(list, v.Sweep)
		}
		reply(w, map[string]any{"sweeps": list})
	})
	mux.HandleFunc("GET /v1/sweeps/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, v := range f.sweeps {
			if v.Sweep.ID == r.PathValue("id") {
				reply(w, v)
				return
			}
		}
		http.NotFound(w, r)
	})
	mux.HandleFunc("GET /v1/events", f.events)
	return mux
}

// logs follows a job's log: what the test sends to f.log, until the test
// ends.
func (f *fakeGantry) logs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	for {
		select {
		case s := <-f.log:
			io.WriteString(w, s)
			rc.Flush()
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		}
	}
}

func (f *fakeGantry) events(w http.ResponseWriter, r *http.Request) {
	ch := make(chan event, 16)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	for {
		select {
		case e := <-ch:
			data, _ := json.Marshal(e)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data)
			rc.Flush()
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		}
	}
}

// event is gantry's event, with the sweep a sweep's event is about.
type event struct {
	gantry.Event
	Sweep string `json:"sweep,omitempty"`
}

// eventSweep is the type of a sweep's events (created, ended, its winner
// chosen); they name no job.
const eventSweep = "sweep"

// change applies fn to the records, then sends events of type typ about
// each of ids: jobs, or sweeps for eventSweep.
func (f *fakeGantry) change(fn func(), typ string, ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
	for _, id := range ids {
		f.seq++
		e := event{Event: gantry.Event{Seq: f.seq, Time: time.Now().UTC(), Type: typ}}
		switch typ {
		case eventSweep:
			e.Sweep = id
			for _, v := range f.sweeps {
				if v.Sweep.ID == id {
					e.State = v.Sweep.State
				}
			}
		case gantry.EventState:
			e.Job, e.State = id, f.job(id).State
		case gantry.EventPush:
			pushes := f.job(id).Pushes
			e.Job, e.Push = id, &pushes[len(pushes)-1]
		}
		for _, ch := range f.subs {
			ch <- e
		}
	}
}

func (f *fakeGantry) job(id string) *gantry.Job {
	for _, j := range f.jobs {
		if j.ID == id {
			return j
		}
	}
	panic("no job " + id)
}

// The user data the page must show as text, never run.
const (
	hostileParam  = `<img src=x onerror="window.pwned='param'">`
	hostileError  = `<b onmouseover="window.pwned='error'">exit 3</b>`
	hostileMetric = `<svg onload="window.pwned='metric'">`
	hostileTag    = `127.0.0.1:5000/iris:<script>window.pwned='tag'</script>`
)

// A sweep of three points and two standalone jobs that promoted a tag.
func newFakeGantry() *fakeGantry {
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	at := func(m int) *time.Time { t := t0.Add(time.Duration(m) * time.Minute); return &t }
	f64 := func(v float64) *float64 { return &v }
	job := func(id string, m int, state gantry.State) *gantry.Job {
		j := &gantry.Job{ID: id, State: state, Times: gantry.Times{Created: *at(m)}}
		if state.Terminal() {
			j.Times.Finished = at(m + 1)
		}
		return j
	}
	const tag = "127.0.0.1:5000/iris:best"
	champ := job("06h1000000000001", 0, gantry.StateSucceeded)
	champ.Spec.Push = []string{"127.0.0.1:5000/iris:run-1"}
	champ.Metrics.Accuracy = f64(0.95)
	champ.Promotions = []gantry.Promotion{{Tag: tag, Promoted: true, Reason: "promoted: 0.9500 > 0.9000"},
		{Tag: hostileTag, Promoted: true, Reason: "promoted: the tag held no image"}}
	kept := job("06h1000000000002", 2, gantry.StateSucceeded)
	kept.Metrics.Accuracy = f64(0.91)
	kept.Promotions = []gantry.Promotion{{Tag: tag, Reason: "kept champion: 0.9100 <= 0.9500"}}

	spec := gantry.SweepSpec{
		Job:    gantry.Spec{Push: []string{"127.0.0.1:5000/iris:sweep"}, PromoteOn: "loss:min", Gates: []gantry.Condition{{Metric: "loss", Op: "<=", Value: 0.5}}},
		Params: []gantry.Param{{Name: "LR", Values: []string{"0.1", "0.3", hostileParam}}},
	}
	sweep := gantry.Sweep{ID: "06h1000000000s00", Spec: spec, State: gantry.StateRunning, Created: *at(4),
		Jobs: []string{"06h1000000000003", "06h1000000000004", "06h1000000000005"}, Image: "gantry/sweep:06h1000000000s00"}
	var points []gantry.SweepPoint
	var js []*gantry.Job
	for i, lr := range spec.Params[0].Values {
		j := job(sweep.Jobs[i], 4, gantry.StateSucceeded)
		j.Spec, j.Sweep, j.Params = spec.Job, sweep.ID, map[string]string{"LR": lr}
		j.Metrics.Values = map[string]float64{"loss": 0.1 * float64(i+1), "accuracy": 0.97 - 0.01*float64(i)}
		js = append(js, j)
		points = append(points, gantry.SweepPoint{Job: j.ID, Params: j.Params, State: j.State, Metrics: j.Metrics, Passed: true})
	}
	// The third point still runs; the second failed.
	js[2].State, js[2].Times.Finished, js[2].Metrics.Values = gantry.StateRunning, nil, nil
	points[2] = gantry.SweepPoint{Job: js[2].ID, Params: js[2].Params, State: gantry.StateRunning}
	js[1].State, js[1].Error = gantry.StateFailed, hostileError
	points[1].State, points[1].Passed, points[1].Error = gantry.StateFailed, false, hostileError

	series := map[string]gantry.Series{js[2].ID: {
		"loss":        {{Step: 1, Value: 0.9}, {Step: 2, Value: 0.6}, {Step: 3, Value: 0.45}},
		"accuracy":    {{Step: 1, Value: 0.7}, {Step: 2, Value: 0.8}, {Step: 3, Value: 0.85}},
		hostileMetric: {{Step: 1, Value: 1}},
	}}
	return &fakeGantry{
		jobs:   append([]*gantry.Job{champ, kept}, js...),
		series: series,
		sweeps: []gantry.SweepView{{Sweep: sweep, Objective: "loss:min", Points: points}},
		done:   make(chan struct{}),
		log:    make(chan string, 1),
	}
}

// A real browser, against the dashboard in front of a fake API: a running
// job's curves grow on its events, a sweep's leaderboard ranks its points and
// marks the winner once chosen, the list shows which job holds each promoted
// tag; user data is shown as text, and the page never reloads.
func TestPageDrawsCurvesAndLeaderboard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a headless browser")
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no headless browser: %v (make services installs chromium)", err)
	}
	f := newFakeGantry()
	srv := httptest.NewServer(Handler(f.handler(), nil, nil))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(f.done) })
	p := openBrowser(t)
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	running := f.jobs[4]

	run("open the running job's page", chromedp.Navigate(srv.URL+"/#/jobs/"+running.ID))
	p.eval(`window.gantryTestMark = 'loaded'`)
	p.waitFor("the event stream", `document.getElementById('conn').textContent`, "live")
	checkCurves(t, p, 3, "0.45", "0.85")
	if got := p.eval(`[...document.querySelectorAll('#job-metrics figure')].find((f) => f.dataset.metric === ` + jsString(hostileMetric) + `)?.querySelector('figcaption').textContent`); !strings.HasPrefix(got, hostileMetric) {
		t.Errorf("the hostile metric's caption reads %q, want its name as text", got)
	}

	growCurves(t, p, f, running.ID)

	run("follow the job's sweep link", chromedp.Click(chromedp.CSS(`#job-sweep a`)))
	checkLeaderboard(t, p, f, "")

	// The winner is chosen: the sweep's event marks it. Then it is pushed
	// (its push event) and promoted (no event of its own), and the sweep
	// ends.
	winner, sweepID := f.sweeps[0].Points[0].Job, f.sweeps[0].Sweep.ID
	f.change(func() { f.sweeps[0].Sweep.Winner = winner }, eventSweep, sweepID)
	p.waitFor("the winner marked", `document.querySelector('#leaderboard tr.winner')?.dataset.job ?? ''`, winner)
	checkLeaderboard(t, p, f, winner)
	f.change(func() {
		f.job(winner).Pushes = []gantry.Push{{Ref: "127.0.0.1:5000/iris:sweep", Digest: "sha256:" + strings.Repeat("ab", 32)}}
	}, gantry.EventPush, winner)
	p.waitFor("the winner's push", `document.querySelector('#jobs tr[data-job="`+winner+`"] td.ref div')?.textContent ?? ''`, "127.0.0.1:5000/iris:sweep @abababababab")
	f.change(func() {
		f.job(winner).Promotions = []gantry.Promotion{{Tag: "127.0.0.1:5000/iris:sweep-best", Promoted: true, Reason: "promoted: the tag held no image with a provenance record"}}
		f.sweeps[0].Sweep.State = gantry.StateSucceeded
	}, eventSweep, sweepID)

	run("open the sweeps list", chromedp.Click(chromedp.CSS(`#nav-sweeps`)))
	sweepRow := func(id string) string {
		return `[...document.querySelector('#sweep-list tr[data-sweep="` + id + `"]')?.cells ?? []].slice(0, 6).map((c) => c.textContent).join('|')`
	}
	p.waitFor("the sweep's row", sweepRow("06h1000000000s00"), "06h1000000000s00|succeeded|3|LR = 0.1, 0.3, "+hostileParam+"|loss:min|"+winner)
	// A new sweep's event lists it.
	f.change(func() {
		sw := gantry.Sweep{ID: "06h1000000000s01", State: gantry.StateQueued, Jobs: []string{}, Created: time.Now(),
			Spec: gantry.SweepSpec{Params: []gantry.Param{{Name: "depth", Values: []string{"2", "4"}}}}}
		f.sweeps = append([]gantry.SweepView{{Sweep: sw}}, f.sweeps...)
	}, eventSweep, "06h1000000000s01")
	p.waitFor("the new sweep's row", sweepRow("06h1000000000s01"), "06h1000000000s01|queued|0|depth = 2, 4|accuracy:max|—")
	if got := p.eval(`[...document.querySelectorAll('#sweep-list tbody tr')].map((r) => r.dataset.sweep).join(' ')`); got != "06h1000000000s01 06h1000000000s00" {
		t.Errorf("the sweeps listed are %q, want the newest first", got)
	}
	run("open the jobs list", chromedp.Click(chromedp.CSS(`#nav-jobs`)))
	checkChampions(t, p, f, winner)

	checkPageClean(t, p)
}

// checkPageClean checks that no user data ran or became markup, that the
// page never reloaded, and that it reported no errors.
func checkPageClean(t *testing.T, p *browserPage) {
	t.Helper()
	if got := p.eval(`String(window.pwned)`); got != "undefined" {
		t.Errorf("user data ran as code: window.pwned = %s", got)
	}
	if got := p.eval(`String(document.querySelectorAll('main img, main script, main b').length)`); got != "0" {
		t.Errorf("user data became %s elements of the page", got)
	}
	if mark := p.eval(`window.gantryTestMark ?? 'reloaded'`); mark != "loaded" {
		t.Errorf("the page reloaded")
	}
	if errs := p.pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// growCurves adds two epochs to job id's series: the first with no event
// (the page sees the log grow), the second with the job's end.
func growCurves(t *testing.T, p *browserPage, f *fakeGantry, id string) {
	t.Helper()
	// An epoch more, with no event: the log grows, and the curves with it.
	f.change(func() {
		s := f.series[id]
		s["loss"] = append(s["loss"], gantry.Point{Step: 4, Value: 0.35})
		s["accuracy"] = append(s["accuracy"], gantry.Point{Step: 4, Value: 0.9})
	}, "")
	f.log <- "epoch 4\n"
	checkCurves(t, p, 4, "0.35", "0.9")

	// The last epoch, and the job ends: its event, and the curves grow.
	f.change(func() {
		s := f.series[id]
		s["loss"] = append(s["loss"], gantry.Point{Step: 5, Value: 0.3})
		s["accuracy"] = append(s["accuracy"], gantry.Point{Step: 5, Value: 0.95})
		j := f.job(id)
		j.State, j.Metrics.Values = gantry.StateSucceeded, map[string]float64{"loss": 0.3, "accuracy": 0.95}
		v := &f.sweeps[0]
		v.Points[2] = gantry.SweepPoint{Job: j.ID, Params: j.Params, State: j.State, Metrics: j.Metrics, Passed: true}
		v.Points[1], v.Points[2] = v.Points[2], v.Points[1] // 0.3 ranks before the failed point
	}, gantry.EventState, id)
	checkCurves(t, p, 5, "0.3", "0.95")
	if got := p.eval(`document.querySelector('#job-metrics figure[data-metric="loss"] line.gate') ? 'gate' : 'none'`); got != "gate" {
		t.Errorf("the loss chart draws no gate (the sweep's loss<=0.5)")
	}
}

// checkCurves waits for the loss and accuracy charts with n points each and
// checks their axes and final values.
func checkCurves(t *testing.T, p *browserPage, n int, loss, acc string) {
	t.Helper()
	for name, final := range map[string]string{"loss": loss, "accuracy": acc} {
		fig := fmt.Sprintf(`document.querySelector('#job-metrics figure[data-metric=%q]')`, name)
		p.waitFor(name+"'s curve", fig+`?.dataset.points ?? ''`, fmt.Sprint(n))
		if got := p.eval(fig + `.querySelector('text.final').textContent`); got != final {
			t.Errorf("%s's final value reads %q, want %s", name, got, final)
		}
		if got := p.eval(`[...` + fig + `.querySelectorAll('text.x-tick')].map((e) => e.textContent).join(' ')`); got != "1 "+fmt.Sprint(n) {
			t.Errorf("%s's steps axis reads %q, want 1 %d", name, got, n)
		}
		if got := p.eval(fig + `.querySelectorAll('text.y-tick').length`); got != "2" {
			t.Errorf("%s's value axis has %s labels, want the lowest and highest", name, got)
		}
		if got := p.eval(fig + `.querySelector('polyline.curve').getAttribute('points').split(' ').length`); got != fmt.Sprint(n) {
			t.Errorf("%s's curve has %s points, want %d", name, got, n)
		}
	}
}

// checkLeaderboard checks that the leaderboard shows the fake's points in
// its order, and winner ("" for none) marked.
func checkLeaderboard(t *testing.T, p *browserPage, f *fakeGantry, winner string) {
	t.Helper()
	f.mu.Lock()
	points := append([]gantry.SweepPoint(nil), f.sweeps[0].Points...)
	f.mu.Unlock()
	var want []string
	for i, pt := range points {
		loss, acc := "—", "—"
		if v, ok := pt.Metrics.Values["loss"]; ok {
			loss, acc = fmt4(v), fmt4(pt.Metrics.Values["accuracy"])
		}
		verdict := "passed"
		if !pt.Passed {
			verdict = pt.Error
		}
		want = append(want, fmt.Sprintf("%d|%s|%s|%s|%s|%s|%s", i+1, pt.Job, pt.State, pt.Params["LR"], loss, acc, verdict))
	}
	rows := `[...document.querySelectorAll('#leaderboard tbody tr')].map((r) => [...r.cells].map((c) => c.textContent.replace(/winner$/, '')).join('|')).join('\n')`
	p.waitFor("the leaderboard", rows, strings.Join(want, "\n"))
	if got := p.eval(`[...document.querySelectorAll('#leaderboard thead th')].map((c) => c.textContent).join('|')`); got != "#|Job|State|LR|loss ↓|accuracy|Verdict" {
		t.Errorf("the leaderboard's columns are %q", got)
	}
	if got := p.eval(`[...document.querySelectorAll('#leaderboard tr.winner, #leaderboard .winner-badge')].map((e) => e.closest('tr').dataset.job).join(' ')`); winner == "" && got != "" || winner != "" && got != winner+" "+winner {
		t.Errorf("the rows marked winner are %q, want %q", got, winner)
	}
}

// checkChampions checks the promoted tags' panel and the badges of the
// jobs list: a tag is held by the latest job it promoted.
func checkChampions(t *testing.T, p *browserPage, f *fakeGantry, winner string) {
	t.Helper()
	want := strings.Join([]string{
		"127.0.0.1:5000/iris:<script>window.pwned='tag'</script>|06h1000000000001",
		"127.0.0.1:5000/iris:best|06h1000000000001",
		"127.0.0.1:5000/iris:sweep-best|" + winner,
	}, "\n")
	p.waitFor("the promoted tags", `[...document.querySelectorAll('#champions tbody tr')].map((r) => r.dataset.tag + '|' + r.dataset.job).join('\n')`, want)
	if got := p.eval(`[...document.querySelectorAll('#jobs tr[data-job="06h1000000000001"] .holds')].map((e) => e.textContent).join(', ')`); got != "holds 127.0.0.1:5000/iris:<script>window.pwned='tag'</script>, holds 127.0.0.1:5000/iris:best" {
		t.Errorf("the champion's row shows %q", got)
	}
	if got := p.eval(`document.querySelectorAll('#jobs tr[data-job="06h1000000000002"] .holds').length`); got != "0" {
		t.Errorf("the job that kept the champion shows %s holds badges, want none", got)
	}
}

// fmt4 formats v as the page does: four significant digits.
func fmt4(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// browserPage is one tab of a headless chromium.
type browserPage struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func openBrowser(t *testing.T) *browserPage {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	p := &browserPage{t: t, ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				p.mu.Lock()
				p.errors = append(p.errors, m.String())
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *browserPage) pageErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

func (p *browserPage) tryEval(js string) (string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](js))
	if err != nil {
		return "", err
	}
	return fmt.Sprint(v), nil
}

func (p *browserPage) eval(js string) string {
	p.t.Helper()
	v, err := p.tryEval(js)
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitFor evaluates js every 50 ms until it gives want; after 30 s it fails
// the test with what it gave and what the page showed.
func (p *browserPage) waitFor(what, js, want string) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got string
	var err error
	for time.Now().Before(deadline) {
		if got, err = p.tryEval(js); err == nil && got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	shown, _ := p.tryEval(`document.body.innerText`)
	p.t.Fatalf("waited for %s: %s gave %q (err %v), want %q\nthe page showed:\n%s\nerrors: %v", what, js, got, err, want, shown, p.pageErrors())
}
