package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// webhookJob creates a queued job with messages to two URLs.
func webhookJob(t *testing.T, s *Store) *gantry.Job {
	t.Helper()
	j := gantry.NewJob(gantry.Spec{}, base)
	j.Webhooks = []gantry.Webhook{
		{URL: "http://a.example/hook", ID: gantry.WebhookID(j.ID, 0)},
		{URL: "http://b.example/hook", ID: gantry.WebhookID(j.ID, 1), Operator: true},
	}
	if err := s.Create(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return j
}

func TestOutboxEnqueuedWithTheEnd(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gantry.db")
	s := open(t, path)
	j := webhookJob(t, s)
	move(t, s, j.ID, gantry.StateBuilding)
	if ms, err := s.PendingWebhooks(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("before the end: PendingWebhooks = %v, %v; want none", ms, err)
	}
	_, err := s.Update(ctx, j.ID, func(j *gantry.Job) error {
		j.Error = "boom"
		j.Metrics.Values = map[string]float64{"accuracy": 0.5}
		return j.Move(gantry.StateFailed, base)
	})
	if err != nil {
		t.Fatal(err)
	}
	// A later change of the ended job enqueues nothing more.
	if _, err := s.Update(ctx, j.ID, func(j *gantry.Job) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path) // the outbox is in the file
	ms, err := s.PendingWebhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].ID != gantry.WebhookID(j.ID, 0) || ms[1].ID != gantry.WebhookID(j.ID, 1) || !ms[1].Operator {
		t.Fatalf("PendingWebhooks = %+v, want the job's two messages in order", ms)
	}
	var ev gantry.JobEvent
	if err := json.Unmarshal(ms[0].Body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != gantry.EventJobEnded || ev.Data.Job != j.ID || ev.Data.State != gantry.StateFailed ||
		ev.Data.Error != "boom" || ev.Data.Metrics["accuracy"] != 0.5 {
		t.Errorf("body = %s, want job.ended of a failed job with its error and metrics", ms[0].Body)
	}
}

func TestWebhookAttempted(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	j := webhookJob(t, s)
	move(t, s, j.ID, gantry.StateCanceled)
	ms, err := s.PendingWebhooks(ctx)
	if err != nil || len(ms) != 2 {
		t.Fatalf("PendingWebhooks = %v, %v", ms, err)
	}
	at := base.Add(time.Minute)
	fail := gantry.WebhookAttempt{Time: at, Status: 500, Duration: gantry.Duration(time.Millisecond)}
	m := ms[0]
	m.Attempts, m.Next = 1, at.Add(time.Second)
	if err := s.WebhookAttempted(ctx, m, fail, false, ""); err != nil {
		t.Fatal(err)
	}
	ok := gantry.WebhookAttempt{Time: at.Add(time.Second), Status: 204, Duration: gantry.Duration(time.Millisecond)}
	m.Attempts = 2
	if err := s.WebhookAttempted(ctx, m, ok, true, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.WebhookAttempted(ctx, ms[1], gantry.WebhookAttempt{Time: at, Error: "refused"}, true, "gave up after 1 attempt"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	w := got.Webhooks
	if len(w[0].Attempts) != 2 || w[0].Attempts[0].Status != 500 || w[0].Delivered == nil || w[0].GaveUp != "" {
		t.Errorf("webhook 0 = %+v, want 2 attempts, delivered", w[0])
	}
	if len(w[1].Attempts) != 1 || w[1].Delivered != nil || w[1].GaveUp == "" {
		t.Errorf("webhook 1 = %+v, want 1 attempt, given up", w[1])
	}
	if left, _ := s.PendingWebhooks(ctx); len(left) != 0 {
		t.Errorf("outbox after both ended = %+v, want empty", left)
	}
	err = s.WebhookAttempted(ctx, m, ok, true, "")
	if !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("attempt of a message no longer pending = %v, want ErrNotFound", err)
	}
}
