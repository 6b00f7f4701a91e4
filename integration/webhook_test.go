package integration

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/webhook"
)

// hookReceiver is a webhook receiver on loopback: it verifies every
// request's signature, answers 500 to the first fails requests of each
// message, and tells of each request on arrived; a request whose hold
// channel is set waits for it before answering.
type hookReceiver struct {
	t     *testing.T
	key   []byte
	fails int

	mu        sync.Mutex
	requests  map[string]int // by webhook-id
	delivered map[string]int // 2xx answered, by webhook-id
	bodies    map[string][]byte
	hold      map[int]chan struct{} // by the request's number for its id
	arrived   chan string
}

func (rc *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify(rc.key, r.Header, body, time.Now()); err != nil {
		rc.t.Errorf("receiver %s: %v", r.URL.Path, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := r.Header.Get(webhook.HeaderID)
	rc.mu.Lock()
	rc.requests[id]++
	n := rc.requests[id]
	var hold chan struct{}
	if r.URL.Path == "/job" {
		hold = rc.hold[n]
	}
	ok := n > rc.fails || r.URL.Path == "/ops"
	if ok {
		rc.delivered[id]++
		rc.bodies[id] = body
	}
	rc.mu.Unlock()
	rc.arrived <- r.URL.Path + " " + id
	if hold != nil {
		<-hold
	}
	if !ok {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// next waits for the next request.
func (rc *hookReceiver) next(within time.Duration) string {
	rc.t.Helper()
	select {
	case s := <-rc.arrived:
		return s
	case <-time.After(within):
		rc.t.Fatalf("no webhook request arrived within %v", within)
		return ""
	}
}

// A job's end is told, signed, to the job's URL and gantryd's own: the
// job's receiver fails twice, gantryd is killed with -9 while the second
// attempt is under way, and the restarted gantryd delivers the message,
// with the same id, each attempt in gantry inspect.
func TestWebhookAcrossKill9(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	rand.Read(key)
	secret := filepath.Join(t.TempDir(), "webhook-secret")
	if err := os.WriteFile(secret, []byte(webhook.FormatSecret(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	rc := &hookReceiver{t: t, key: key, fails: 2, requests: map[string]int{}, delivered: map[string]int{},
		bodies: map[string][]byte{}, hold: map[int]chan struct{}{2: release}, arrived: make(chan string, 16)}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	defer close(release)

	d := startDaemon(t, "--webhook-secret-file", secret, "--webhook-allow-private", "--webhook-backoff", "50ms",
		"--webhook", srv.URL+"/ops")
	ref := uniqueRef(t)
	id := d.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"), "--push", ref, "--webhook", srv.URL+"/job")
	jobMsg, opsMsg := gantry.WebhookID(id, 0), gantry.WebhookID(id, 1)

	// Both messages' first requests, in either order; then the job's
	// second, held: gantryd dies while it is under way.
	seen := map[string]int{}
	for seen["/job "+jobMsg] < 2 {
		seen[rc.next(5*time.Minute)]++
	}
	d.kill9()
	release <- struct{}{}
	d.start()
	for seen["/job "+jobMsg] < 3 || seen["/ops "+opsMsg] < 1 {
		seen[rc.next(2*time.Minute)]++
	}

	j := d.waitJob(id, 5*time.Minute)
	// The record of an attempt follows its request: a real state, read
	// until it says so, with the bound the other tests give a broken run.
	deadline := time.Now().Add(5 * time.Minute)
	for j.Webhooks[0].Delivered == nil || j.Webhooks[1].Delivered == nil {
		if time.Now().After(deadline) {
			t.Fatalf("webhooks in gantry inspect: %+v, want both delivered", j.Webhooks)
		}
		time.Sleep(100 * time.Millisecond)
		j = d.inspect(id)
	}
	checkWebhookRecord(t, j, srv.URL)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.delivered[jobMsg] < 1 || rc.delivered[opsMsg] < 1 {
		t.Errorf("deliveries %v, want at least one of each message", rc.delivered)
	}
	var ev gantry.JobEvent
	if err := json.Unmarshal(rc.bodies[jobMsg], &ev); err != nil {
		t.Fatalf("event %s: %v", rc.bodies[jobMsg], err)
	}
	served := servedDigest(t, ref)
	if ev.Type != gantry.EventJobEnded || ev.Data.Job != id || ev.Data.State != gantry.StateSucceeded ||
		ev.Data.Metrics["accuracy"] != 0.95 || len(ev.Data.Pushes) == 0 || ev.Data.Pushes[0].Digest != served {
		t.Errorf("event %s: want job.ended of %s, succeeded, accuracy 0.95, pushed %s", rc.bodies[jobMsg], id, served)
	}
}

// checkWebhookRecord checks the job's webhooks as gantry inspect shows
// them: the job's URL failed twice (500) before a 2xx, the attempt gantryd
// died in is not recorded (or recorded as failed), gantryd's own URL is
// marked as the operator's.
func checkWebhookRecord(t *testing.T, j *gantry.Job, base string) {
	t.Helper()
	if len(j.Webhooks) != 2 || j.Webhooks[0].URL != base+"/job" || j.Webhooks[1].URL != base+"/ops" || !j.Webhooks[1].Operator {
		t.Fatalf("webhooks = %+v, want the job's URL then gantryd's", j.Webhooks)
	}
	as := j.Webhooks[0].Attempts
	if len(as) < 2 || as[0].Status != 500 || as[len(as)-1].Status/100 != 2 {
		t.Errorf("attempts of the job's webhook = %+v, want a 500 first and a 2xx last", as)
	}
	for _, a := range as[:len(as)-1] {
		if a.Status/100 == 2 {
			t.Errorf("attempts = %+v: a 2xx before the last", as)
		}
	}
}
