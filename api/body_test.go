package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// step is one read of a scripted body: the clock moves by wait, then the
// read returns n bytes, or the connection's timeout.
type step struct {
	wait    time.Duration
	n       int
	timeout bool
}

// scriptedBody plays steps on a fake clock and ends with io.EOF.
type scriptedBody struct {
	now   *time.Time
	steps []step
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

func (s *scriptedBody) Read(p []byte) (int, error) {
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	*s.now = s.now.Add(st.wait)
	if st.timeout {
		return 0, timeoutError{}
	}
	return st.n, nil
}

func (s *scriptedBody) Close() error { return nil }

func TestBoundedBody(t *testing.T) {
	epoch := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return epoch.Add(d) }
	lim := BodyLimits{Idle: 30 * time.Second, Grace: 10 * time.Second, MinRate: 64 << 10}
	tests := []struct {
		name  string
		steps []step
		say   string      // in the error; "" when the body reads to its end
		dls   []time.Time // the read deadlines set, in order
	}{
		{
			name:  "fast",
			steps: []step{{wait: time.Second, n: 1 << 20}, {wait: time.Second, n: 1 << 20}},
			// The floor: 1 MiB at 64 KiB/s is 16 s from the start; 2 MiB, 32 s, past the idle limit.
			dls: []time.Time{at(10 * time.Second), at(16 * time.Second), at(32 * time.Second), {}},
		},
		{
			name:  "a byte a second",
			steps: []step{{wait: time.Second, n: 1}, {wait: 9 * time.Second, n: 1}, {wait: 2 * time.Second, n: 1}},
			say:   "3 bytes in 12s, under the 65536 bytes/s",
			dls:   []time.Time{at(10 * time.Second), at(10 * time.Second), at(10 * time.Second), at(12 * time.Second)},
		},
		{
			name:  "nothing within the grace",
			steps: []step{{wait: 10 * time.Second, timeout: true}},
			say:   "0 bytes in 10s",
			dls:   []time.Time{at(10 * time.Second), at(10 * time.Second)},
		},
		{
			name:  "stalled after a fast start",
			steps: []step{{wait: time.Second, n: 10 << 20}, {wait: 30 * time.Second, timeout: true}},
			say:   "no bytes for 30s",
			dls:   []time.Time{at(10 * time.Second), at(31 * time.Second), at(31 * time.Second)},
		},
		{
			name:  "slow within the grace, then fast",
			steps: []step{{wait: 9 * time.Second, n: 1}, {wait: time.Second, n: 1<<20 - 1}},
			dls:   []time.Time{at(10 * time.Second), at(10 * time.Second), at(16 * time.Second), {}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := epoch
			lim := lim
			lim.Now = func() time.Time { return now }
			var dls []time.Time
			b := &boundedBody{
				body: &scriptedBody{now: &now, steps: tc.steps}, lim: lim,
				setDeadline: func(d time.Time) error { dls = append(dls, d); return nil },
			}
			_, err := io.Copy(io.Discard, b)
			if tc.say == "" && err != nil {
				t.Errorf("read: %v; want the whole body", err)
			}
			if tc.say != "" && (!errors.Is(err, errSlowBody) || !strings.Contains(err.Error(), tc.say)) {
				t.Errorf("read: %v; want errSlowBody saying %q", err, tc.say)
			}
			if len(dls) != len(tc.dls) {
				t.Fatalf("deadlines %v, want %v", dls, tc.dls)
			}
			for i := range dls {
				if !dls[i].Equal(tc.dls[i]) {
					t.Errorf("deadline %d: %v, want %v", i, dls[i], tc.dls[i])
				}
			}
		})
	}
}

// A body that stops coming ends its request 408, saying why; the service
// sees the read fail. The clock is an hour behind, so the connection's
// deadline has passed the moment it is set.
func TestStalledBodyAnswers408(t *testing.T) {
	read := make(chan error, 1)
	svc := &fakeService{submit: func(_ context.Context, _ gantry.Spec, _ map[string]string, tar io.Reader) (*gantry.Job, error) {
		_, err := io.Copy(io.Discard, tar)
		read <- err
		return nil, gantry.Errorf(gantry.ErrInvalid, "build context: not a valid tar stream: %v", err)
	}}
	lim := DefaultBodyLimits
	lim.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	srv := httptest.NewServer(BoundBodies(handler(svc, nil), lim))
	t.Cleanup(srv.Close)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	go pw.Write([]byte("the start of a tar stream"))
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/jobs", pr)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "request body too slow") {
		t.Errorf("answer %d %s; want 408 saying the body was too slow", resp.StatusCode, body)
	}
	if err := <-read; !errors.Is(err, errSlowBody) {
		t.Errorf("the service read %v, want errSlowBody", err)
	}
}
