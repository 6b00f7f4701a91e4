// Package api is gantry's REST API (JSON under /v1/) and the client the CLI
// uses to speak it. It is the one place where error kinds become HTTP status
// codes, and back.
//
// Endpoints:
//
//	GET  /_ping                      "OK" when the daemon serves
//	GET  /v1/version                 the daemon's and the engine's versions
//	GET  /v1/info                    the versions and the operator's policy:
//	                                 what a job may ask (an Info)
//	POST /v1/jobs?spec=JSON          submit: the body is the build context as a
//	                                 tar stream (Content-Type application/x-tar),
//	                                 the way docker build sends it; spec is a
//	                                 gantry.Spec. Answers 201 with the job.
//	                                 The values of the spec's secret_env come
//	                                 in the Gantry-Secret-Env header (base64
//	                                 of a JSON object, at most 64 KiB), held in
//	                                 gantryd's memory only; those of its
//	                                 build.secrets in Gantry-Build-Secret
//	                                 headers, ID=BASE64 each (buildsecrets.go).
//	GET  /v1/jobs?limit=N&before=ID&state=S
//	                                 a page of jobs, newest first:
//	                                 {"jobs": [...], "next": "ID", "event_seq": N},
//	                                 without their outputs' lists of files;
//	                                 pass next as before for the following page;
//	                                 follow /v1/events?since=N to keep it current
//	GET  /v1/jobs/{id}               one job's record
//	GET  /v1/jobs/{id}/logs?follow=1 the job's log as text; with follow, the
//	                                 response streams until the job ends
//	                                 (gantryd's own lines start with 0x1E)
//	GET  /v1/events?job=ID&since=N&follow=0
//	                                 the event stream (server-sent events):
//	                                 each event is "id: SEQ", "event: TYPE"
//	                                 (state, accuracy, push, sweep) and "data: JSON"
//	                                 (a gantry.Event). It replays the events
//	                                 after since (or the Last-Event-ID header),
//	                                 then follows new ones; with job, only that
//	                                 job's, ending after its terminal state;
//	                                 follow=0 ends once caught up. Comment lines
//	                                 keep an idle stream alive.
//	GET  /v1/jobs/{id}/build?follow=1
//	                                 the build's status as JSON lines (BuildKit's
//	                                 client.SolveStatus), to draw BuildKit's own
//	                                 progress display from
//	GET  /v1/jobs/{id}/progress?follow=1
//	                                 the push's progress as JSON lines (a
//	                                 gantry.Progress each: ref, current,
//	                                 total, and the digest once pushed)
//	GET  /v1/jobs/{id}/outputs       the files the job's training left in its
//	                                 output directory, as a tar stream
//	                                 (application/x-tar): each under its path
//	                                 there, with the mode recorded, owned by
//	                                 root, dated at the epoch. 409 while the job
//	                                 has not finished training (they are copied
//	                                 when it does), 404 when it kept none. Each
//	                                 file's digest is checked as it is sent: on
//	                                 a mismatch the stream breaks off, unfinished
//	                                 (and gantryd logs why)
//	GET  /v1/jobs/{id}/metrics?name=NAME the job's metric series, a gantry.Series
//	                                 ({"loss": [{"step": 0, "value": 0.5}]}); with
//	                                 name, that metric's; {} while there is none
//	GET  /v1/history?name=REPO&tag=T the jobs that pushed to REPO, newest first,
//	                                 each marked whether REPO:T holds its image
//	POST /v1/jobs/{id}/cancel        cancel the job in whatever state it is;
//	                                 answers 202 with the record (the job ends
//	                                 canceled once its build, container or push
//	                                 is stopped); harmless on a canceled job
//	POST /v1/jobs/{id}/push?progress=1
//	                                 push a finished job's image again, body
//	                                 {"to": ["REF", ...]} (empty: the job's own
//	                                 references); answers with the record. With
//	                                 progress=1, once the push has begun, the
//	                                 answer is JSON lines (application/x-ndjson,
//	                                 a PushLine each): its lines ("line") and
//	                                 typed progress ("progress"), then the
//	                                 record ("job") or the error ("error")
//	POST /v1/sweeps?spec=JSON        submit a sweep, a gantry.SweepSpec (body, secrets: as jobs): 201
//	GET  /v1/sweeps?limit=N          {"sweeps": [...], "event_seq": N}, newest first
//	GET  /v1/sweeps/{id}             the gantry.SweepView, its leaderboard (sweeps.go)
//	POST /v1/sweeps/{id}/cancel      cancel the sweep and its unfinished points
//	GET  /v1/openapi.json            this API's OpenAPI 3.1 document (openapi.go)
//
// Errors answer {"message": "...", "kind": "invalid"} with the status the kind
// maps to in statusOf; a body that came too slowly (BoundBodies) answers 408.
// JSON in requests is read strictly: exact keys, each once (decodeStrict).
// gantryd serves this handler behind RefuseBrowsers (403) and BoundBodies,
// on listeners made with LimitListener (503 when every connection is busy).
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"sync"

	"github.com/gantry-ml/gantry"
)

// Version is the API's version, the first part of every path.
const Version = "v1"

// MaxSpecBytes bounds the spec query parameter.
const MaxSpecBytes = 64 << 10

// Service is what the API serves; daemon.Daemon implements it.
type Service interface {
	// Submit records a job; secrets are the values of spec.Run.SecretEnv,
	// which the service keeps in memory only.
	Submit(ctx context.Context, spec gantry.Spec, secrets map[string]string, tar io.Reader) (*gantry.Job, error)
	Get(ctx context.Context, id string) (*gantry.Job, error)
	List(ctx context.Context, o gantry.JobFilter) ([]*gantry.Job, string, error)
	Logs(ctx context.Context, id string, follow bool, w io.Writer) error
	BuildStatus(ctx context.Context, id string, follow bool, w io.Writer) error
	Progress(ctx context.Context, id string, follow bool, w io.Writer) error
	Cancel(ctx context.Context, id string) (*gantry.Job, error)
	Push(ctx context.Context, id string, refs []string, rep gantry.Reporter) (*gantry.Job, error)
	Events(ctx context.Context, after uint64, job string, follow bool, send func(*gantry.Event) error) error
	History(ctx context.Context, name, tag string) ([]gantry.HistoryEntry, error)
	// Outputs returns the outputs a job kept (ErrConflict before they are
	// copied); WriteOutputs writes them as a tar stream.
	Outputs(ctx context.Context, id string) (*gantry.Outputs, error)
	WriteOutputs(ctx context.Context, id string, w io.Writer) error
	Metrics(ctx context.Context, id, name string) (gantry.Series, error)
	// Nodes lists where training runs: the swarm's nodes, or the one
	// engine, each with the jobs training there.
	Nodes(ctx context.Context) (gantry.Cluster, error)
	LastEvent(ctx context.Context) (uint64, error)
	// Policy is the operator's bound on what a job may ask.
	Policy() gantry.Policy
	SweepService
	PruneService
}

// Info is what /v1/info answers: who serves, and what a job may ask of it.
type Info struct {
	Version VersionInfo   `json:"version"`
	Policy  gantry.Policy `json:"policy"`
}

// PushRequest is the body of POST /v1/jobs/{id}/push.
type PushRequest struct {
	To []string `json:"to,omitempty"`
}

// VersionInfo is what /v1/version answers.
type VersionInfo struct {
	Version    string `json:"version"`
	APIVersion string `json:"api_version"`
	Engine     string `json:"engine,omitempty"`
	EngineAPI  string `json:"engine_api,omitempty"`
}

// JobList is a page of jobs.
type JobList struct {
	Jobs []*gantry.Job `json:"jobs"`
	Next string        `json:"next,omitempty"`
	// EventSeq is the newest event's number when the page was read: a
	// client that shows the page follows /v1/events?since=EventSeq, with no
	// need to replay the history before it.
	EventSeq uint64 `json:"event_seq"`
}

// Error is the body of every error response.
type Error struct {
	Message string `json:"message"`
	Kind    string `json:"kind,omitempty"`
}

// kinds is the one table between error kinds and HTTP status codes.
var kinds = []struct {
	kind   error
	name   string
	status int
}{
	{gantry.ErrNotFound, "not_found", http.StatusNotFound},
	{gantry.ErrInvalid, "invalid", http.StatusBadRequest},
	{gantry.ErrConflict, "conflict", http.StatusConflict},
	{gantry.ErrTooLarge, "too_large", http.StatusRequestEntityTooLarge},
	{gantry.ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{gantry.ErrForbidden, "forbidden", http.StatusForbidden},
	{gantry.ErrTooMany, "too_many", http.StatusTooManyRequests},
}

func statusOf(err error) (int, string) {
	for _, k := range kinds {
		if errors.Is(err, k.kind) {
			return k.status, k.name
		}
	}
	return http.StatusInternalServerError, ""
}

// kindOf maps an error response back to its kind.
func kindOf(name string) error {
	for _, k := range kinds {
		if k.name == name {
			return k.kind
		}
	}
	return nil
}

// Handler returns the API's HTTP handler.
func Handler(svc Service, version func(context.Context) VersionInfo, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	s := &server{svc: svc, version: version, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("GET /v1/version", s.getVersion)
	mux.HandleFunc("GET /v1/info", s.getInfo)
	mux.HandleFunc("POST /v1/jobs", s.submit)
	mux.HandleFunc("GET /v1/jobs", s.list)
	mux.HandleFunc("GET /v1/jobs/{id}", s.get)
	mux.HandleFunc("GET /v1/jobs/{id}/logs", s.stream("text/plain; charset=utf-8", Service.Logs))
	mux.HandleFunc("GET /v1/jobs/{id}/build", s.stream("application/x-ndjson", Service.BuildStatus))
	mux.HandleFunc("GET /v1/jobs/{id}/progress", s.stream("application/x-ndjson", Service.Progress))
	mux.HandleFunc("GET /v1/jobs/{id}/outputs", s.outputs)
	mux.HandleFunc("GET /v1/jobs/{id}/metrics", s.metrics)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("GET /v1/nodes", s.nodes)
	mux.HandleFunc("GET /v1/history", s.history)
	mux.HandleFunc("POST /v1/jobs/{id}/cancel", s.cancel)
	mux.HandleFunc("POST /v1/jobs/{id}/push", s.push)
	mux.HandleFunc("POST /v1/prune", s.prune)
	s.sweepRoutes(mux)
	mux.HandleFunc("GET /v1/openapi.json", s.openapi)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, gantry.Errorf(gantry.ErrNotFound, "no such endpoint: %s %s (this is gantry API %s)", r.Method, r.URL.Path, Version))
	})
	return mux
}

type server struct {
	svc     Service
	version func(context.Context) VersionInfo
	log     *slog.Logger
}

func (s *server) getVersion(w http.ResponseWriter, r *http.Request) {
	s.json(w, http.StatusOK, s.version(r.Context()))
}

func (s *server) getInfo(w http.ResponseWriter, r *http.Request) {
	s.json(w, http.StatusOK, Info{Version: s.version(r.Context()), Policy: s.svc.Policy()})
}

// DecodeSpec decodes a job spec strictly: unknown fields, keys that match a
// field only without regard to case, keys given twice and wrong types are
// refused with ErrInvalid, naming the key; a spec over MaxSpecBytes with
// ErrTooLarge.
func DecodeSpec(data []byte) (gantry.Spec, error) {
	var spec gantry.Spec
	if len(data) > MaxSpecBytes {
		return spec, gantry.Errorf(gantry.ErrTooLarge, "spec: over %d bytes", MaxSpecBytes)
	}
	if err := decodeStrict(data, &spec, "spec"); err != nil {
		return gantry.Spec{}, err
	}
	// What is accepted must be sendable again: JSON escapes some characters
	// to six bytes, so the spec re-encoded may outgrow the limit.
	if out, err := json.Marshal(spec); err != nil || len(out) > MaxSpecBytes-len(`"dockerfile":"Dockerfile",`) {
		return spec, gantry.Errorf(gantry.ErrTooLarge, "spec: over %d bytes once encoded", MaxSpecBytes)
	}
	return spec, nil
}

// jsonKind names what a Go type looks like in JSON.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64:
		return "a number"
	}
	return t.String()
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := gantry.JobFilter{Before: q.Get("before")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			s.error(w, r, gantry.Errorf(gantry.ErrInvalid, "limit %q: want a number >= 0", l))
			return
		}
		o.Limit = n
	}
	for _, st := range q["state"] {
		if !gantry.State(st).Valid() {
			s.error(w, r, gantry.Errorf(gantry.ErrInvalid, "state %q: want one of %v", st, gantry.States))
			return
		}
		o.States = append(o.States, gantry.State(st))
	}
	// The event number first: a change after it may show in the page too,
	// but none between the two is missed.
	seq, err := s.svc.LastEvent(r.Context())
	if err != nil {
		s.error(w, r, err)
		return
	}
	jobs, next, err := s.svc.List(r.Context(), o)
	if err != nil {
		s.error(w, r, err)
		return
	}
	if jobs == nil {
		jobs = []*gantry.Job{}
	}
	s.json(w, http.StatusOK, JobList{Jobs: jobs, Next: next, EventSeq: seq})
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	j, err := s.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.json(w, http.StatusOK, j)
}

// stream serves one of a job's files (its log, its build status) with
// read, following it when asked.
func (s *server) stream(ctype string, read func(Service, context.Context, string, bool, io.Writer) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
		// Fail before the first byte for an unknown job, so it gets a status.
		if _, err := s.svc.Get(r.Context(), id); err != nil {
			s.error(w, r, err)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		fw := flushWriter{w: w, rc: http.NewResponseController(w)}
		if err := read(s.svc, r.Context(), id, follow, fw); err != nil && r.Context().Err() == nil {
			s.log.Warn("stream", "path", r.URL.Path, "err", err)
		}
	}
}

func (s *server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since := q.Get("since")
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		since = h
	}
	var after uint64
	if since != "" {
		n, err := strconv.ParseUint(since, 10, 64)
		if err != nil {
			s.error(w, r, gantry.Errorf(gantry.ErrInvalid, "since %q: want an event number", since))
			return
		}
		after = n
	}
	follow := true
	if f := q.Get("follow"); f != "" {
		follow, _ = strconv.ParseBool(f)
	}
	job := q.Get("job")
	if job != "" {
		if _, err := s.svc.Get(r.Context(), job); err != nil {
			s.error(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	err := s.svc.Events(r.Context(), after, job, follow, func(e *gantry.Event) error {
		if e == nil {
			_, err := io.WriteString(w, ": keep-alive\n\n")
			if err == nil {
				err = rc.Flush()
			}
			return err
		}
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		s.log.Warn("events", "err", err)
	}
}

func (s *server) history(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("name") == "" {
		s.error(w, r, gantry.Errorf(gantry.ErrInvalid, "history: name the image (?name=REGISTRY/REPO)"))
		return
	}
	h, err := s.svc.History(r.Context(), q.Get("name"), q.Get("tag"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	if h == nil {
		h = []gantry.HistoryEntry{}
	}
	s.json(w, http.StatusOK, h)
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	j, err := s.svc.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		s.error(w, r, err)
		return
	}
	status := http.StatusAccepted
	if j.State.Terminal() {
		status = http.StatusOK
	}
	s.json(w, status, j)
}

func (s *server) push(w http.ResponseWriter, r *http.Request) {
	req, err := decodePush(r.Body)
	if err != nil {
		s.error(w, r, err)
		return
	}
	id := r.PathValue("id")
	// The push's lines go to gantryd's log, and with progress=1 its lines
	// and typed progress to the client as they come.
	var stream *pushStream
	if r.URL.Query().Get("progress") == "1" {
		stream = &pushStream{w: w, rc: http.NewResponseController(w), log: s.log}
	}
	j, err := s.svc.Push(r.Context(), id, req.To, pushReporter{id: id, log: s.log, stream: stream})
	if stream != nil && stream.begun() {
		// The status line is sent: the outcome goes in the stream.
		if err != nil {
			_, body := s.errorBody(r, err)
			stream.send(PushLine{Error: &body})
		} else {
			stream.send(PushLine{Job: j})
		}
		return
	}
	if err != nil {
		s.error(w, r, err)
		return
	}
	s.json(w, http.StatusOK, j)
}

// decodePush reads the body of a push request, strictly as DecodeSpec reads
// a spec; an empty body asks for the job's own references.
func decodePush(body io.Reader) (PushRequest, error) {
	var req PushRequest
	data, err := io.ReadAll(io.LimitReader(body, MaxSpecBytes+1))
	if err != nil {
		return req, gantry.Errorf(gantry.ErrInvalid, "push request: %v", err)
	}
	if len(data) > MaxSpecBytes {
		return req, gantry.Errorf(gantry.ErrTooLarge, "push request: over %d bytes", MaxSpecBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return req, nil
	}
	return req, decodeStrict(data, &req, "push request")
}

// PushLine is one line of the answer to a push asked with progress=1
// (application/x-ndjson): lines for people and typed progress while it
// runs, then the record or the error.
type PushLine struct {
	Line     string           `json:"line,omitempty"`
	Progress *gantry.Progress `json:"progress,omitempty"`
	Job      *gantry.Job      `json:"job,omitempty"`
	Error    *Error           `json:"error,omitempty"`
}

// pushReporter takes a push's lines (to gantryd's log, and to the stream
// when there is one) and its progress (to the stream).
type pushReporter struct {
	id     string
	log    *slog.Logger
	stream *pushStream
}

func (p pushReporter) Linef(format string, args ...any) {
	l := fmt.Sprintf(format, args...)
	p.log.Info("push", "job", p.id, "progress", l)
	if p.stream != nil {
		p.stream.send(PushLine{Line: l})
	}
}

func (p pushReporter) Progress(pr gantry.Progress) {
	if p.stream != nil {
		p.stream.send(PushLine{Progress: &pr})
	}
}

// pushStream answers a push with JSON lines, from the first one on.
type pushStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	log *slog.Logger

	mu    sync.Mutex
	begin bool
}

func (p *pushStream) send(l PushLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.begin {
		p.begin = true
		p.w.Header().Set("Content-Type", "application/x-ndjson")
		p.w.WriteHeader(http.StatusOK)
	}
	if err := json.NewEncoder(p.w).Encode(l); err != nil {
		p.log.Warn("write push progress", "err", err)
		return
	}
	p.rc.Flush()
}

func (p *pushStream) begun() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.begin
}

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) { return f.w.Write(p) }
func (f flushWriter) Flush()                      { f.rc.Flush() }

func (s *server) json(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.log.Warn("write response", "err", err)
	}
}

func (s *server) error(w http.ResponseWriter, r *http.Request, err error) {
	status, body := s.errorBody(r, err)
	s.json(w, status, body)
}

// errorBody is what an error answers: its status and body.
func (s *server) errorBody(r *http.Request, err error) (int, Error) {
	// A body that came too slowly fails whatever read it, with the
	// handler's error around it: the answer says what happened.
	if slow := slowBody(r); slow != nil {
		return http.StatusRequestTimeout, Error{Message: slow.Error()}
	}
	status, kind := statusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = fmt.Sprintf("internal error: %v", err)
	}
	return status, Error{Message: msg, Kind: kind}
}
