package gantry

import "time"

// The kinds of event.
const (
	EventState    = "state"    // the job moved to Event.State
	EventAccuracy = "accuracy" // the job's accuracy was recorded
	EventPush     = "push"     // the job's image was pushed to Event.Push
	// EventSweep: sweep Event.Sweep changed: its state (Event.State), or
	// its winner was chosen. Job is empty.
	EventSweep = "sweep"
)

// Event is one change in a job's life, as the event stream delivers it.
// Events are numbered in the order they happened, across all jobs; a client
// that reconnects with the last number it saw misses nothing.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Job      string    `json:"job"`
	Type     string    `json:"type"`
	State    State     `json:"state,omitempty"`
	Error    string    `json:"error,omitempty"`
	Accuracy *float64  `json:"accuracy,omitempty"`
	Push     *Push     `json:"push,omitempty"`
	Sweep    string    `json:"sweep,omitempty"`
}

// Changes returns the events that a change of a job's record from old to
// cur makes; old is nil for a new job. Seq is left for the store to number.
func Changes(old, cur *Job, now time.Time) []Event {
	var evs []Event
	ev := func(typ string) Event { return Event{Time: now.UTC(), Job: cur.ID, Type: typ} }
	if old == nil || old.State != cur.State {
		e := ev(EventState)
		e.State, e.Error = cur.State, cur.Error
		evs = append(evs, e)
	}
	if cur.Metrics.Accuracy != nil && (old == nil || old.Metrics.Accuracy == nil || *old.Metrics.Accuracy != *cur.Metrics.Accuracy) {
		e := ev(EventAccuracy)
		a := *cur.Metrics.Accuracy
		e.Accuracy = &a
		evs = append(evs, e)
	}
	for _, p := range cur.Pushes {
		seen := false
		if old != nil {
			for _, q := range old.Pushes {
				seen = seen || q == p
			}
		}
		if !seen {
			e := ev(EventPush)
			p := p
			e.Push = &p
			evs = append(evs, e)
		}
	}
	// A state event comes last, so a client that sees "succeeded" has
	// already seen the accuracy and pushes that led there.
	if len(evs) > 1 && evs[0].Type == EventState {
		evs = append(evs[1:], evs[0])
	}
	return evs
}
