package daemon

// Webhooks: when a job ends, the store writes one message per URL to the
// outbox, in the transaction that records the end (store.Update). The
// sender here delivers them, signed (webhook/), at least once: a message
// leaves the outbox only once a receiver answered 2xx or it was given up,
// each attempt recorded in the job. It wakes when the store changes and
// when the next retry is due, never on a fixed beat; on start, every
// pending message is due.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/webhook"
)

// WebhookConfig is how gantryd sends webhooks.
type WebhookConfig struct {
	// URLs are told of every job submitted while they are set (gantryd
	// --webhook), besides the job's own.
	URLs []string
	// Key signs every message (the key of --webhook-secret-file); without
	// it no webhook is sent, and a job naming one is refused.
	Key []byte
	// Backoff is the delay before the first retry, doubled at each retry
	// up to MaxBackoff (defaults 1s and 10m).
	Backoff, MaxBackoff time.Duration
	// A message is given up after MaxAttempts attempts (default 20), or
	// once it is MaxAge old (default 24h).
	MaxAttempts int
	MaxAge      time.Duration
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
}

// webhookParallel is how many messages are delivered at once.
const webhookParallel = 4

// maxWebhooks bounds the URLs a job may name.
const maxWebhooks = 8

// outbox is what the sender needs of the store.
type outbox interface {
	PendingWebhooks(ctx context.Context) ([]gantry.WebhookMessage, error)
	WebhookAttempted(ctx context.Context, m gantry.WebhookMessage, a gantry.WebhookAttempt, done bool, gaveUp string) error
}

// hookSender delivers the outbox's messages.
type hookSender struct {
	cfg          WebhookConfig
	allowPrivate bool
	box          outbox
	// job is for a job's URLs (guarded), operator for gantryd's own.
	job, operator *http.Client
	now           func() time.Time
	// after is time.After; tests give a clock of their own.
	after  func(time.Duration) <-chan time.Time
	jitter func(n int64) int64
}

// newHookSender sends with cfg from box; allowPrivate is the policy's
// WebhookPrivate.
func newHookSender(cfg WebhookConfig, allowPrivate bool, box outbox) *hookSender {
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Minute
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 20
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &hookSender{
		cfg: cfg, allowPrivate: allowPrivate, box: box,
		job:      guardedClient(allowPrivate),
		operator: operatorClient(),
		now:      time.Now, after: time.After, jitter: rand.Int64N,
	}
}

// deliverWebhooks delivers messages as they come and fall due, until ctx
// ends.
func (d *Daemon) deliverWebhooks(ctx context.Context) {
	h := d.hooks
	if len(h.cfg.Key) == 0 {
		return
	}
	first := true
	for {
		changed := d.changed.wait() // before reading, so no change is missed
		next, err := h.deliverDue(ctx, first)
		if err != nil && ctx.Err() == nil {
			d.log.Error("deliver webhooks", "err", err)
		}
		first = false
		var due <-chan time.Time
		if !next.IsZero() {
			due = h.after(max(next.Sub(h.now()), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-due:
		}
	}
}

// deliverDue makes one attempt at each message that is due (with all,
// every pending one), and returns when the next of those left is due (zero
// when none is left).
func (h *hookSender) deliverDue(ctx context.Context, all bool) (time.Time, error) {
	ms, err := h.box.PendingWebhooks(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var (
		mu    sync.Mutex
		next  time.Time
		first error
	)
	later := func(t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	// One message's trouble stops no other: the group has no context.
	var g errgroup.Group
	g.SetLimit(webhookParallel)
	now := h.now()
	for _, m := range ms {
		if !all && m.Next.After(now) {
			later(m.Next)
			continue
		}
		g.Go(func() error {
			m, done, err := h.deliver(ctx, m)
			switch {
			case errors.Is(err, gantry.ErrNotFound):
				// Its job is gone, and the message with it.
			case err != nil:
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
				later(h.now().Add(h.backoff(m.Attempts + 1))) // try again, as if it had failed
			case !done:
				later(m.Next)
			}
			return nil
		})
	}
	g.Wait()
	return next, first
}

// deliver makes one attempt at m and records it; it returns m as kept in
// the outbox, and whether it has left.
func (h *hookSender) deliver(ctx context.Context, m gantry.WebhookMessage) (gantry.WebhookMessage, bool, error) {
	a := h.attempt(ctx, m)
	if ctx.Err() != nil {
		return m, false, nil // gantryd is stopping: not the receiver's fault
	}
	m.Attempts++
	done, gaveUp := a.Error == "" && a.Status >= 200 && a.Status < 300, ""
	switch {
	case done:
	case m.Attempts >= h.cfg.MaxAttempts:
		done, gaveUp = true, fmt.Sprintf("gave up after %d attempts", m.Attempts)
	case h.now().Sub(m.Created) >= h.cfg.MaxAge:
		done, gaveUp = true, fmt.Sprintf("gave up after %v", h.cfg.MaxAge)
	default:
		m.Next = h.now().Add(h.backoff(m.Attempts))
	}
	if err := h.box.WebhookAttempted(context.WithoutCancel(ctx), m, a, done, gaveUp); err != nil {
		return m, false, err
	}
	return m, done, nil
}

// backoff is the delay after the n-th failed attempt: Backoff doubled n-1
// times, capped at MaxBackoff, of which the second half is random (so
// receivers that failed together are not retried together).
func (h *hookSender) backoff(n int) time.Duration {
	d := h.cfg.MaxBackoff
	if n-1 < 40 && h.cfg.Backoff<<(n-1) < d && h.cfg.Backoff<<(n-1) > 0 {
		d = h.cfg.Backoff << (n - 1)
	}
	return d/2 + time.Duration(h.jitter(int64(d/2)+1))
}

// maxErrorText bounds the error an attempt records.
const maxErrorText = 512

// attempt sends m once, signed now.
func (h *hookSender) attempt(ctx context.Context, m gantry.WebhookMessage) gantry.WebhookAttempt {
	start := h.now()
	a := gantry.WebhookAttempt{Time: start}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.Body))
	if err != nil {
		a.Error = clip(err.Error(), maxErrorText)
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gantryd/"+gantry.Version)
	webhook.SetHeaders(req.Header, h.cfg.Key, m.ID, start, m.Body)
	c := h.job
	if m.Operator {
		c = h.operator
	}
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		a.Status = resp.StatusCode
	} else {
		a.Error = clip(err.Error(), maxErrorText)
	}
	a.Duration = gantry.Duration(h.now().Sub(start))
	return a
}

// addWebhooks gives new job j its messages: one per URL of its spec, then
// one per gantryd --webhook URL.
func (d *Daemon) addWebhooks(j *gantry.Job) {
	if len(d.hooks.cfg.Key) == 0 {
		return
	}
	for _, u := range j.Spec.Webhooks {
		j.Webhooks = append(j.Webhooks, gantry.Webhook{URL: u, ID: gantry.WebhookID(j.ID, len(j.Webhooks))})
	}
	for _, u := range d.hooks.cfg.URLs {
		j.Webhooks = append(j.Webhooks, gantry.Webhook{URL: u, ID: gantry.WebhookID(j.ID, len(j.Webhooks)), Operator: true})
	}
}
