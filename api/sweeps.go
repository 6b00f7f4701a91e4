package api

// Sweeps: a grid of jobs built once, of which only the best ships.
//
// POST /v1/sweeps takes the build context as the body and the secrets'
// values in SecretEnvHeader, as POST /v1/jobs does, and answers 201 with the
// gantry.Sweep (its points' job IDs in grid order). GET /v1/sweeps/{id}
// answers the gantry.SweepView: the points that passed first, best first by
// the objective (ties in grid order), then the rest in grid order. A
// sweep's changes (its state, its winner) are "sweep" events on
// /v1/events.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gantry-ml/gantry"
)

// SweepService is what the API serves of sweeps; daemon.Daemon implements
// it, as part of Service.
type SweepService interface {
	// SubmitSweep records a sweep and its points; secrets are the values
	// of spec.Job.Run.SecretEnv, given to every point.
	SubmitSweep(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, tar io.Reader) (*gantry.Sweep, error)
	GetSweep(ctx context.Context, id string) (*gantry.SweepView, error)
	ListSweeps(ctx context.Context, limit int) ([]*gantry.Sweep, error)
	CancelSweep(ctx context.Context, id string) (*gantry.Sweep, error)
}

// SweepList is what GET /v1/sweeps answers.
type SweepList struct {
	Sweeps []*gantry.Sweep `json:"sweeps"`
	// EventSeq is the newest event's number when the list was read: follow
	// /v1/events?since=EventSeq to see what changes after.
	EventSeq uint64 `json:"event_seq"`
}

func (s *server) sweepRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/sweeps", s.submitSweep)
	mux.HandleFunc("GET /v1/sweeps", s.listSweeps)
	mux.HandleFunc("GET /v1/sweeps/{id}", s.getSweep)
	mux.HandleFunc("POST /v1/sweeps/{id}/cancel", s.cancelSweep)
}

// DecodeSweepSpec decodes a sweep's spec as DecodeSpec does a job's: it
// returns ErrInvalid or ErrTooLarge.
func DecodeSweepSpec(data []byte) (gantry.SweepSpec, error) {
	var spec gantry.SweepSpec
	if len(data) > MaxSpecBytes {
		return spec, gantry.Errorf(gantry.ErrTooLarge, "spec: over %d bytes", MaxSpecBytes)
	}
	if err := decodeStrict(data, &spec, "spec"); err != nil {
		return gantry.SweepSpec{}, err
	}
	return spec, nil
}

func (s *server) submitSweep(w http.ResponseWriter, r *http.Request) {
	submission(s, w, r, DecodeSweepSpec, func(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, body io.Reader) (any, error) {
		return s.svc.SubmitSweep(ctx, spec, secrets, body)
	})
}

func (s *server) listSweeps(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			s.error(w, r, gantry.Errorf(gantry.ErrInvalid, "limit %q: want a number >= 0", l))
			return
		}
		limit = n
	}
	seq, err := s.svc.LastEvent(r.Context())
	if err != nil {
		s.error(w, r, err)
		return
	}
	sweeps, err := s.svc.ListSweeps(r.Context(), limit)
	if err != nil {
		s.error(w, r, err)
		return
	}
	if sweeps == nil {
		sweeps = []*gantry.Sweep{}
	}
	s.json(w, http.StatusOK, SweepList{Sweeps: sweeps, EventSeq: seq})
}

func (s *server) getSweep(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.GetSweep(r.Context(), r.PathValue("id"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.json(w, http.StatusOK, v)
}

func (s *server) cancelSweep(w http.ResponseWriter, r *http.Request) {
	sw, err := s.svc.CancelSweep(r.Context(), r.PathValue("id"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.json(w, http.StatusOK, sw)
}

// SubmitSweep sends a sweep's spec, its secrets' values and the build
// context (a tar stream) and returns the recorded sweep.
func (c *Client) SubmitSweep(ctx context.Context, spec gantry.SweepSpec, secrets map[string]string, tar io.Reader) (*gantry.Sweep, error) {
	return post[gantry.Sweep](ctx, c, "/v1/sweeps", spec, secrets, tar)
}

// GetSweep returns sweep id with its leaderboard.
func (c *Client) GetSweep(ctx context.Context, id string) (*gantry.SweepView, error) {
	var v gantry.SweepView
	if err := c.getJSON(ctx, "/v1/sweeps/"+url.PathEscape(id), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// ListSweeps returns up to limit sweeps (all when 0), newest first, and the
// newest event's number when they were read.
func (c *Client) ListSweeps(ctx context.Context, limit int) (SweepList, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var l SweepList
	err := c.getJSON(ctx, "/v1/sweeps", q, &l)
	return l, err
}

// CancelSweep cancels sweep id's unfinished points and the sweep.
func (c *Client) CancelSweep(ctx context.Context, id string) (*gantry.Sweep, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/sweeps/"+url.PathEscape(id)+"/cancel", nil, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var sw gantry.Sweep
	return &sw, json.NewDecoder(resp.Body).Decode(&sw)
}
