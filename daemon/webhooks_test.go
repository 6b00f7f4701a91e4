package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/store"
	"github.com/gantry-ml/gantry/webhook"
)

// hookClock is the sender's clock in tests: a wait is asked on asked, and
// ends when the test advances the clock by it.
type hookClock struct {
	mu    sync.Mutex
	t     time.Time
	asked chan time.Duration
	fire  chan time.Time
}

func newHookClock() *hookClock {
	// An hour ahead of the store's clock, so what it enqueues is due.
	return &hookClock{t: time.Now().Add(time.Hour), asked: make(chan time.Duration, 1), fire: make(chan time.Time)}
}

func (c *hookClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *hookClock) after(d time.Duration) <-chan time.Time {
	c.asked <- d
	return c.fire
}

// advance moves the clock by the wait asked and ends it.
func (c *hookClock) advance(t *testing.T) time.Duration {
	t.Helper()
	d := pipeReceive(t, "the sender to ask for a wait", c.asked)
	c.mu.Lock()
	c.t = c.t.Add(d)
	now := c.t
	c.mu.Unlock()
	c.fire <- now
	return d
}

// signalBox tells of each attempt recorded.
type signalBox struct {
	outbox
	recorded chan gantry.WebhookAttempt
}

func (b *signalBox) WebhookAttempted(ctx context.Context, m gantry.WebhookMessage, a gantry.WebhookAttempt, done bool, gaveUp string) error {
	err := b.outbox.WebhookAttempted(ctx, m, a, done, gaveUp)
	b.recorded <- a
	return err
}

// receiver answers each request with the next of statuses (the last one
// once they run out) after verifying its signature at clock's time.
type receiver struct {
	t        *testing.T
	key      []byte
	clock    *hookClock
	mu       sync.Mutex
	statuses []int
	bodies   []string
	ids      []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify(rc.key, r.Header, body, rc.clock.now()); err != nil {
		rc.t.Errorf("receiver: %v", err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.bodies, rc.ids = append(rc.bodies, string(body)), append(rc.ids, r.Header.Get(webhook.HeaderID))
	st := rc.statuses[min(len(rc.bodies), len(rc.statuses))-1]
	w.WriteHeader(st)
}

type hookRig struct {
	d     *Daemon
	st    *store.Store
	clock *hookClock
	box   *signalBox
	rc    *receiver
	url   string
}

// newHookRig is a daemon (no builder nor engine: its jobs end by cancel)
// whose sender posts to a receiver on loopback answering statuses.
func newHookRig(t *testing.T, statuses []int, edit func(*Config)) *hookRig {
	t.Helper()
	dir := t.TempDir()
	st := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
	t.Cleanup(func() { st.Close() })
	key := []byte("0123456789abcdef01234567")
	cfg := Config{DataDir: dir, Instance: pipeInstance, MaxJobs: 1, Logger: slog.New(slog.DiscardHandler),
		Policy:   gantry.Policy{WebhookPrivate: true},
		Webhooks: WebhookConfig{Key: key, Backoff: time.Second, MaxBackoff: 4 * time.Second}}
	if edit != nil {
		edit(&cfg)
	}
	d, err := New(cfg, st, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := newHookClock()
	box := &signalBox{outbox: st, recorded: make(chan gantry.WebhookAttempt, 16)}
	d.hooks.now, d.hooks.after, d.hooks.box = clock.now, clock.after, box
	rc := &receiver{t: t, key: key, clock: clock, statuses: statuses}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return &hookRig{d: d, st: st, clock: clock, box: box, rc: rc, url: srv.URL + "/hook"}
}

// run runs the sender until the test ends.
func (r *hookRig) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.d.deliverWebhooks(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// endJob submits a job naming the receiver and cancels it while queued.
func (r *hookRig) endJob(t *testing.T) *gantry.Job {
	t.Helper()
	ctx := context.Background()
	j := gantry.NewJob(gantry.Spec{Webhooks: []string{r.url}}, time.Now())
	if err := r.d.checkWebhooks(ctx, &j.Spec); err != nil {
		t.Fatal(err)
	}
	if err := r.d.enqueue(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.Cancel(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	return j
}

func (r *hookRig) nextAttempt(t *testing.T) gantry.WebhookAttempt {
	t.Helper()
	return pipeReceive(t, "an attempt to be recorded", r.box.recorded)
}

func TestWebhookRetriedUntilDelivered(t *testing.T) {
	r := newHookRig(t, []int{500, 503, 204}, nil)
	r.run(t)
	j := r.endJob(t)
	for i, want := range []struct {
		status   int
		min, max time.Duration
	}{{500, 500 * time.Millisecond, time.Second}, {503, time.Second, 2 * time.Second}} {
		if a := r.nextAttempt(t); a.Status != want.status {
			t.Fatalf("attempt %d: status %d, want %d", i+1, a.Status, want.status)
		}
		if d := r.clock.advance(t); d < want.min || d > want.max {
			t.Errorf("wait after attempt %d = %v, want within [%v, %v]", i+1, d, want.min, want.max)
		}
	}
	if a := r.nextAttempt(t); a.Status != 204 {
		t.Fatalf("attempt 3: status %d, want 204", a.Status)
	}
	got, err := r.st.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Webhooks) != 1 || len(got.Webhooks[0].Attempts) != 3 || got.Webhooks[0].Delivered == nil {
		t.Fatalf("webhooks = %+v, want one, delivered after 3 attempts", got.Webhooks)
	}
	if ms, _ := r.st.PendingWebhooks(context.Background()); len(ms) != 0 {
		t.Errorf("outbox = %+v, want empty", ms)
	}
	r.rc.mu.Lock()
	defer r.rc.mu.Unlock()
	for i, id := range r.rc.ids {
		if id != gantry.WebhookID(j.ID, 0) || r.rc.bodies[i] != r.rc.bodies[0] {
			t.Errorf("request %d: id %s, want the same id and body in every attempt", i, id)
		}
	}
}

func TestWebhookGivenUp(t *testing.T) {
	r := newHookRig(t, []int{500}, func(c *Config) { c.Webhooks.MaxAttempts = 2 })
	r.run(t)
	j := r.endJob(t)
	r.nextAttempt(t)
	r.clock.advance(t)
	r.nextAttempt(t)
	got, _ := r.st.Get(context.Background(), j.ID)
	if w := got.Webhooks[0]; w.GaveUp == "" || w.Delivered != nil || len(w.Attempts) != 2 {
		t.Errorf("webhook = %+v, want given up after 2 attempts", w)
	}
	if ms, _ := r.st.PendingWebhooks(context.Background()); len(ms) != 0 {
		t.Errorf("outbox = %+v, want empty", ms)
	}
}

// TestWebhookPendingOnStart: a message left in the outbox (its retry far
// ahead) is delivered as soon as a sender starts.
func TestWebhookPendingOnStart(t *testing.T) {
	r := newHookRig(t, []int{200}, nil)
	j := r.endJob(t)
	ms, err := r.st.PendingWebhooks(context.Background())
	if err != nil || len(ms) != 1 {
		t.Fatalf("outbox = %v, %v", ms, err)
	}
	m := ms[0]
	m.Attempts, m.Next = 1, r.clock.now().Add(time.Hour)
	if err := r.st.WebhookAttempted(context.Background(), m, gantry.WebhookAttempt{Time: time.Now(), Error: "killed"}, false, ""); err != nil {
		t.Fatal(err)
	}
	r.run(t)
	if a := r.nextAttempt(t); a.Status != 200 {
		t.Fatalf("attempt on start: %+v, want 200", a)
	}
	got, _ := r.st.Get(context.Background(), j.ID)
	if w := got.Webhooks[0]; w.Delivered == nil || len(w.Attempts) != 2 {
		t.Errorf("webhook = %+v, want delivered at its 2nd attempt", w)
	}
}

func TestWebhookBackoffBounded(t *testing.T) {
	h := newHookSender(WebhookConfig{}, false, nil)
	for n := 1; n <= 30; n++ {
		d := min(time.Second<<(n-1), 10*time.Minute)
		if n > 20 {
			d = 10 * time.Minute
		}
		h.jitter = func(int64) int64 { return 0 }
		lo := h.backoff(n)
		h.jitter = func(k int64) int64 { return k - 1 }
		hi := h.backoff(n)
		if lo != d/2 || hi != d {
			t.Errorf("backoff(%d) in [%v, %v], want [%v, %v]", n, lo, hi, d/2, d)
		}
	}
}

func TestWebhookGuard(t *testing.T) {
	for _, tc := range []struct {
		addr         string
		allowPrivate bool
		ok           bool
	}{
		{"93.184.216.34", false, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1", true, true},
		{"10.1.2.3", false, false},
		{"10.1.2.3", true, true},
		{"::ffff:192.168.1.1", false, false},
		{"169.254.169.254", true, false},
		{"0.0.0.0", true, false},
		{"fe80::1", true, false},
	} {
		err := checkHookAddr(netip.MustParseAddr(tc.addr), tc.allowPrivate)
		if (err == nil) != tc.ok {
			t.Errorf("checkHookAddr(%s, allowPrivate %v) = %v, want ok %v", tc.addr, tc.allowPrivate, err, tc.ok)
		}
	}
}

// TestWebhookRefused: what a job may not name is refused at submit, and
// a private address is refused again as it is dialed.
func TestWebhookRefused(t *testing.T) {
	ctx := context.Background()
	r := newHookRig(t, []int{200}, func(c *Config) { c.Policy.WebhookPrivate = false })
	for _, tc := range []struct {
		url  string
		want error
	}{
		{r.url, gantry.ErrForbidden},
		{"ftp://hooks.example/x", gantry.ErrInvalid},
		{"http:///x", gantry.ErrInvalid},
		{"http://[::1]:80/x", gantry.ErrForbidden},
	} {
		spec := gantry.Spec{Webhooks: []string{tc.url}}
		if err := r.d.checkWebhooks(ctx, &spec); !errors.Is(err, tc.want) {
			t.Errorf("checkWebhooks(%s) = %v, want %v", tc.url, err, tc.want)
		}
	}
	a := r.d.hooks.attempt(ctx, gantry.WebhookMessage{ID: "msg_x", URL: r.url, Body: []byte("{}")})
	if a.Error == "" || a.Status != 0 {
		t.Errorf("attempt at a loopback receiver without --webhook-allow-private = %+v, want refused at dial", a)
	}
	r2 := newHookRig(t, []int{200}, func(c *Config) { c.Webhooks.Key = nil })
	spec := gantry.Spec{Webhooks: []string{"https://hooks.example/x"}}
	if err := r2.d.checkWebhooks(ctx, &spec); !errors.Is(err, gantry.ErrForbidden) {
		t.Errorf("checkWebhooks without a secret = %v, want ErrForbidden", err)
	}
	if r2.d.Policy().Webhooks || !r.d.Policy().Webhooks {
		t.Errorf("Policy().Webhooks = %v without a key, %v with one; want false, true", r2.d.Policy().Webhooks, r.d.Policy().Webhooks)
	}
}
