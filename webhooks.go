package gantry

import (
	"encoding/json"
	"fmt"
	"time"
)

// EventJobEnded is the type of the webhook event sent when a job ends.
const EventJobEnded = "job.ended"

// Webhook is one message about a job to one URL, and how its delivery
// went. Its ID (the webhook-id header) stays the same across retries, so a
// receiver can drop a message it already has.
type Webhook struct {
	URL string `json:"url"`
	ID  string `json:"id"`
	// Operator marks a URL of gantryd's own --webhook, rather than the
	// job's: the job's are checked against the policy.
	Operator bool             `json:"operator,omitempty"`
	Attempts []WebhookAttempt `json:"attempts,omitempty"`
	// Delivered is when a receiver answered 2xx; GaveUp says why delivery
	// stopped without that.
	Delivered *time.Time `json:"delivered,omitempty"`
	GaveUp    string     `json:"gave_up,omitempty"`
}

// WebhookAttempt is one request of a delivery: when, what the receiver
// answered (an HTTP status, or the error that stood in for one), and how
// long it took.
type WebhookAttempt struct {
	Time     time.Time `json:"time"`
	Status   int       `json:"status,omitempty"`
	Error    string    `json:"error,omitempty"`
	Duration Duration  `json:"duration"`
}

// WebhookMessage is a message waiting in the outbox: written in the
// transaction that ends its job, removed once delivered or given up.
type WebhookMessage struct {
	ID  string `json:"id"`
	Job string `json:"job"`
	// Index is the message's place in the job's Webhooks.
	Index    int             `json:"index"`
	URL      string          `json:"url"`
	Operator bool            `json:"operator,omitempty"`
	Body     json.RawMessage `json:"body"`
	Created  time.Time       `json:"created"`
	// Attempts counts the requests made; Next is when the next is due.
	Attempts int       `json:"attempts"`
	Next     time.Time `json:"next"`
}

// JobEvent is the body of a webhook message, in the Standard Webhooks
// shape: a type, a timestamp and the data.
type JobEvent struct {
	Type      string       `json:"type"`
	Timestamp time.Time    `json:"timestamp"`
	Data      JobEventData `json:"data"`
}

// JobEventData is what a job.ended event tells of the job.
type JobEventData struct {
	Job        string             `json:"job"`
	State      State              `json:"state"`
	Error      string             `json:"error,omitempty"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	Pushes     []Push             `json:"pushes,omitempty"`
	Promotions []Promotion        `json:"promotions,omitempty"`
	Sweep      string             `json:"sweep,omitempty"`
}

// WebhookID is the webhook-id of job id's message number i.
func WebhookID(job string, i int) string { return fmt.Sprintf("msg_%s_%02d", job, i) }

// EndedEvent returns the job.ended event of j, as it ended at now.
func EndedEvent(j *Job, now time.Time) JobEvent {
	return JobEvent{Type: EventJobEnded, Timestamp: now.UTC(), Data: JobEventData{
		Job: j.ID, State: j.State, Error: j.Error, Metrics: j.Metrics.Values,
		Pushes: j.Pushes, Promotions: j.Promotions, Sweep: j.Sweep,
	}}
}
