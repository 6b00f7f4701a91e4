package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gantry-ml/gantry"
)

// chromium is Debian's package, which make services installs.
const chromium = "/usr/bin/chromium"

// A real browser opens the dashboard while a job runs. Without a reload it
// sees the job's state change to succeeded and the job's point on the
// accuracy chart of its image, drawn apart from a rejected job's point; the
// job's page shows its record and the log the container printed.
func TestDashboard(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the dashboard test needs a headless browser: %v; install chromium (make services does)", err)
	}
	addr := freeAddr(t)
	d := startDaemon(t, "--http", addr)
	url := "http://" + addr + "/"
	waitServing(t, url+"_ping", 30*time.Second)

	p := openBrowser(t)
	if err := chromedp.Do(p.ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	// Gone if the page reloads.
	p.eval(`window.gantryTestMark = 'loaded'`)
	p.waitFor("the event stream to connect", `document.getElementById('conn').textContent`, textIs("live"))

	rejectedRef, ref := uniqueRef(t), uniqueRef(t)
	rejected := d.submit(trainerDir(t, "print('Model accuracy: 0.5000')\n"), "--push", rejectedRef, "--min-accuracy", "0.9")
	good := d.submit(trainerDir(t, "import time\nprint('training', flush=True)\ntime.sleep(4)\nprint('Model accuracy: 0.9333')\n"),
		"--push", ref, "--min-accuracy", "0.9")

	rowState := func(id string) string {
		return fmt.Sprintf(`document.querySelector('#jobs tr[data-job=%q] .state')?.textContent ?? ''`, id)
	}
	pointState := func(id string) string {
		return fmt.Sprintf(`document.querySelector('#charts [data-job=%q]')?.dataset.state ?? ''`, id)
	}
	p.waitFor("job "+good+"'s row to show it under way", rowState(good), textIsOneOf("queued", "building", "running", "pushing"))
	p.waitFor("job "+good+"'s row to show succeeded", rowState(good), textIs("succeeded"))
	p.waitFor("job "+good+"'s point on the chart", pointState(good), textIs("succeeded"))
	p.waitFor("job "+rejected+"'s row to show rejected", rowState(rejected), textIs("rejected"))
	p.waitFor("job "+rejected+"'s point on the chart", pointState(rejected), textIs("rejected"))
	if mark := p.eval(`window.gantryTestMark ?? 'reloaded'`); mark != "loaded" {
		t.Errorf("the page reloaded while the jobs ran")
	}

	// Both points are on the chart of the image they were pushed to, with
	// the gate, and a pushed job looks unlike a rejected one.
	image := strings.Split(ref, ":run-")[0]
	for _, id := range []string{good, rejected} {
		if got := p.eval(fmt.Sprintf(`document.querySelector('#charts [data-job=%q]').closest('figure').dataset.image`, id)); got != image {
			t.Errorf("job %s is on the chart of %q, want %q", id, got, image)
		}
	}
	if p.eval(fmt.Sprintf(`String(!!document.querySelector('#charts figure[data-image=%q] line.gate'))`, image)) != "true" {
		t.Errorf("the chart of %s draws no gate", image)
	}
	look := func(id string) string {
		return p.eval(fmt.Sprintf(`(() => {
			const m = document.querySelector('#charts [data-job=%q]').firstElementChild.nextElementSibling;
			const s = getComputedStyle(m);
			return m.tagName + ' fill=' + s.fill + ' stroke=' + s.stroke;
		})()`, id))
	}
	goodLook, rejectedLook := look(good), look(rejected)
	if !strings.HasPrefix(goodLook, "circle ") || strings.Contains(goodLook, "fill=none") {
		t.Errorf("the succeeded job's point is %s, want a filled circle", goodLook)
	}
	if strings.HasPrefix(rejectedLook, "circle ") || !strings.Contains(rejectedLook, "fill=none") {
		t.Errorf("the rejected job's point is %s, want a mark that is not a filled circle", rejectedLook)
	}
	goodFill := strings.Fields(strings.SplitN(goodLook, "fill=", 2)[1])[0]
	if strings.Contains(rejectedLook, goodFill) {
		t.Errorf("the rejected job's point (%s) has the colour of the succeeded one (%s)", rejectedLook, goodLook)
	}
	if got := p.eval(fmt.Sprintf(`document.querySelector('#jobs tr[data-job=%q]').textContent`, good)); !strings.Contains(got, "0.9333") || !strings.Contains(got, ref) {
		t.Errorf("job %s's row reads %q, want its accuracy 0.9333 and the reference %s", good, got, ref)
	}
	p.screenshot("dashboard.png", true)

	// The job's page: its record and the log the container printed.
	if err := chromedp.Do(p.ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#jobs tr[data-job=%q] a`, good)))); err != nil {
		t.Fatalf("click job %s: %v", good, err)
	}
	p.waitFor("job "+good+"'s log", `document.getElementById('log').textContent`, textContains("Model accuracy: 0.9333"))
	p.waitFor("job "+good+"'s record", `document.getElementById('record').textContent`, textContains(`"state": "succeeded"`))
	p.screenshot("dashboard-job.png", false)

	if errs := p.pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// dashboardSweepTrainer reports loss and val_acc for 5 epochs with the structured
// metric line, from the sweep's parameter LR: the lower LR, the lower the
// final loss (LR/5 + 0.05) and the higher val_acc (0.9 - LR/10).
var dashboardSweepTrainer = fmt.Sprintf(`import json, os
lr = float(os.environ["LR"])
for epoch in range(1, 6):
    loss = round(lr * (6 - epoch) / 5 + 0.01 * epoch, 4)
    acc = round(0.8 + 0.02 * epoch - lr / 10, 4)
    print(%[1]q + json.dumps({"name": "loss", "value": loss, "step": epoch}), flush=True)
    print(%[1]q + json.dumps({"name": "val_acc", "value": acc, "step": epoch}), flush=True)
print("Model accuracy: %%.4f" %% acc)
`, gantry.MetricLine)

// A real browser follows a sweep of three points on the dashboard: without
// a reload the sweep appears, its leaderboard ranks the points by the loss
// the trainer printed and marks the winner gantryd chose; the winner's page
// draws its loss and val_acc curves, 5 points each; the jobs list shows
// that the winner holds the promoted tag.
func TestDashboardSweep(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the dashboard test needs a headless browser: %v; install chromium (make services does)", err)
	}
	addr := freeAddr(t)
	d := startDaemon(t, "--http", addr)
	url := "http://" + addr + "/"
	waitServing(t, url+"_ping", 30*time.Second)

	p := openBrowser(t)
	if err := chromedp.Do(p.ctx, chromedp.Navigate(url+"#/sweeps")); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	p.eval(`window.gantryTestMark = 'loaded'`)
	p.waitFor("the event stream to connect", `document.getElementById('conn').textContent`, textIs("live"))

	// A fresh repository: its tag "best" holds nothing yet.
	repo := uniqueRepo(t)
	ref := repo + ":run"
	d.mustGantry("sweep", trainerDir(t, dashboardSweepTrainer), "--param", "LR=0.3,0.1,0.2",
		"--push", ref, "--promote", "best", "--promote-on", "loss:min")
	sw := findSweep(t, url, ref)
	for _, id := range sw.Jobs {
		removeJobImage(t, id)
	}
	t.Cleanup(func() {
		var v gantry.SweepView
		// By the name the record gives it, not by ID: an identical image
		// another job built is that job's.
		if dashboardJSON(url+"v1/sweeps/"+sw.ID, &v) == nil && v.Sweep.Image != "" {
			exec.Command("docker", "rmi", "gantry/sweep:"+sw.ID).Run()
		}
	})

	row := fmt.Sprintf(`#sweep-list tr[data-sweep=%q]`, sw.ID)
	p.waitFor("sweep "+sw.ID+" in the list", fmt.Sprintf(`document.querySelector('%s')?.dataset.sweep ?? ''`, row), textIs(sw.ID))
	p.click(row + " a")
	winner := p.waitFor("the winner marked on the leaderboard", `document.querySelector('#leaderboard tr.winner')?.dataset.job ?? ''`, func(s string) bool { return s != "" })
	checkSweepLeaderboard(t, p, url, sw.ID, winner)
	p.screenshot("dashboard-sweep.png", false)

	// The winner's page: its curves, as the trainer printed them.
	p.click(fmt.Sprintf(`#leaderboard tr[data-job=%q] a`, winner))
	for name, final := range map[string]string{"loss": "0.07", "val_acc": "0.89"} {
		fig := fmt.Sprintf(`document.querySelector('#job-metrics figure[data-metric=%q]')`, name)
		p.waitFor(name+"'s curve of 5 points", fig+`?.dataset.points ?? ''`, textIs("5"))
		if got := p.eval(fig + `.querySelector('text.final').textContent`); got != final {
			t.Errorf("%s's final value reads %q, want %s as the trainer printed", name, got, final)
		}
		if got := p.eval(`[...` + fig + `.querySelectorAll('text.x-tick')].map((e) => e.textContent).join(' ')`); got != "1 5" {
			t.Errorf("%s's steps axis reads %q, want 1 5", name, got)
		}
	}
	p.screenshot("dashboard-curves.png", false)

	// The jobs list: the winner holds the promoted tag.
	p.click(`#nav-jobs`)
	p.waitFor(repo+":best's holder", fmt.Sprintf(`document.querySelector('#champions tr[data-tag=%q]')?.dataset.job ?? ''`, repo+":best"), textIs(winner))
	if got := p.eval(fmt.Sprintf(`document.querySelector('#jobs tr[data-job=%q] .holds')?.textContent ?? ''`, winner)); got != "holds "+repo+":best" {
		t.Errorf("the winner's row shows %q, want holds %s:best", got, repo)
	}
	if mark := p.eval(`window.gantryTestMark ?? 'reloaded'`); mark != "loaded" {
		t.Errorf("the page reloaded while the sweep ran")
	}
	if errs := p.pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// checkSweepLeaderboard checks the leaderboard against what the trainer
// printed (the lowest LR, the lowest loss, first) and gantryd's choice.
func checkSweepLeaderboard(t *testing.T, p *browserPage, url, id, winner string) {
	t.Helper()
	want := "LR=0.1 loss=0.07 val_acc=0.89 passed\nLR=0.2 loss=0.09 val_acc=0.88 passed\nLR=0.3 loss=0.11 val_acc=0.87 passed"
	p.waitFor("the leaderboard of the ended sweep", `[...document.querySelectorAll('#leaderboard tbody tr')].map((r) =>
		'LR=' + r.querySelector('[data-param="LR"]').textContent +
		' loss=' + r.querySelector('td.objective').textContent +
		' val_acc=' + r.querySelector('[data-metric="val_acc"]').textContent +
		' ' + r.querySelector('td.verdict').textContent).join('\n')`, textIs(want))
	var v gantry.SweepView
	if err := dashboardJSON(url+"v1/sweeps/"+id, &v); err != nil {
		t.Fatal(err)
	}
	if v.Sweep.Winner != winner || len(v.Points) != 3 || v.Points[0].Job != winner || v.Points[0].Params["LR"] != "0.1" {
		t.Errorf("the page marks %s the winner; gantryd's sweep says %+v", winner, v)
	}
	if got := p.eval(`document.querySelectorAll('#leaderboard tr.winner').length`); got != "1" {
		t.Errorf("%s rows are marked the winner, want 1", got)
	}
}

// click clicks the element sel finds, in one step in the page: the lists
// are drawn anew on each event, so a node found first may be gone when a
// second step clicks it.
func (p *browserPage) click(sel string) {
	p.t.Helper()
	if got := p.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (e) e.click(); return !!e; })()`, sel)); got != "true" {
		p.t.Fatalf("click %s: no such element", sel)
	}
}

// findSweep returns the sweep that pushes to ref, from the API.
func findSweep(t *testing.T, url, ref string) gantry.Sweep {
	t.Helper()
	var list struct{ Sweeps []gantry.Sweep }
	if err := dashboardJSON(url+"v1/sweeps", &list); err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Sweeps {
		if len(s.Spec.Job.Push) > 0 && s.Spec.Job.Push[0] == ref {
			return s
		}
	}
	t.Fatalf("no sweep pushes to %s: %+v", ref, list.Sweeps)
	return gantry.Sweep{}
}

func dashboardJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitServing waits until url answers 200.
func waitServing(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard did not answer at %s within %v: %v", url, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// browserPage is one tab of a headless chromium.
type browserPage struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	messages []string // what the page wrote to its console
	errors   []string // exceptions, and console errors
}

// openBrowser starts chromium with a fresh profile; it is stopped when the
// test ends.
func openBrowser(t *testing.T) *browserPage {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no deadline
		t.Fatalf("start %s: %v", chromium, err)
	}
	p := &browserPage{t: t, ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.messages = append(p.messages, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
			if m.IsException() || m.Type == chromedp.ConsoleError {
				p.errors = append(p.errors, m.String())
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Logf("the page's console:\n%s", strings.Join(p.messages, "\n"))
		}
	})
	return p
}

func (p *browserPage) pageErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// eval evaluates js in the page and returns its value as a string.
func (p *browserPage) eval(js string) string {
	p.t.Helper()
	v, err := p.tryEval(js)
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
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

// waitFor evaluates js every 100 ms until ok holds for its value. After 3
// minutes it fails the test with the last value and what the page showed.
func (p *browserPage) waitFor(what, js string, ok func(string) bool) string {
	p.t.Helper()
	const within = 3 * time.Minute
	deadline := time.Now().Add(within)
	var last string
	var err error
	for {
		last, err = p.tryEval(js)
		if err == nil && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	shown, _ := p.tryEval(`document.body.innerText`)
	charts, _ := p.tryEval(`document.getElementById('charts').innerHTML`)
	p.screenshot("dashboard-failed.png", false)
	p.t.Fatalf("waited %v for %s: %s gave %q (err %v)\nthe page showed:\n%s\nthe charts:\n%s", within, what, js, last, err, shown, charts)
	return ""
}

func textIs(want string) func(string) bool { return func(s string) bool { return s == want } }

func textIsOneOf(want ...string) func(string) bool {
	return func(s string) bool {
		for _, w := range want {
			if s == w {
				return true
			}
		}
		return false
	}
}

func textContains(want string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, want) }
}

// screenshot saves a full-page screenshot in test-artifacts/, and, for the
// README's picture when GANTRY_UPDATE_SCREENSHOT=1, in docs/.
func (p *browserPage) screenshot(name string, forDocs bool) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot: %v", err)
		return
	}
	dirs := []string{filepath.Join("..", "test-artifacts")}
	if forDocs && os.Getenv("GANTRY_UPDATE_SCREENSHOT") == "1" {
		dirs = append(dirs, filepath.Join("..", "docs"))
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			p.t.Errorf("screenshot: %v", err)
			continue
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			p.t.Errorf("screenshot: %v", err)
			continue
		}
		abs, _ := filepath.Abs(path)
		p.t.Logf("screenshot: %s", abs)
	}
}
