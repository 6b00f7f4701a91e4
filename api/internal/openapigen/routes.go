package main

// The API's routes, one line each: the route as the mux registers it, an
// operation ID, a summary, then what it takes and answers. Request and
// response bodies are Go types, whose schemas schema.go derives.
//
// Adding a route: register it in the mux (its own file under api/, one
// mux.HandleFunc line in server.go), add its line here, then run
// `go generate ./api/`. TestRoutesDocumented (api) fails until both agree,
// TestDocumentCurrent (here) until api/openapi.json is regenerated.

import (
	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

var routes = []route{
	{"GET /_ping", "ping", "Answers OK when the daemon serves", []opt{answer(200, plain("OK"))}},
	{"GET /v1/version", "getVersion", "The daemon's and the engine's versions", []opt{ok[api.VersionInfo]()}},
	{"GET /v1/info", "getInfo", "The versions and the operator's policy: what a job may ask", []opt{ok[api.Info]()}},
	{"GET /v1/openapi.json", "getOpenAPI", "This document", []opt{answer(200, jsonAny())}},

	{"POST /v1/jobs", "submitJob", "Submit a job: the build context as a tar stream, the spec in the query", []opt{
		spec[gantry.Spec](), secretEnv(), tarBody(), created[gantry.Job]()}},
	{"GET /v1/jobs", "listJobs", "A page of jobs, newest first, without their outputs' lists of files", []opt{
		query("limit", "At most this many jobs (0: all).", count()),
		query("before", "The next of the previous page: the jobs older than this one.", str()),
		query("state", "Only jobs in these states (repeat the parameter for several).", arrayOf(enumRef[gantry.State]())),
		ok[api.JobList]()}},
	{"GET /v1/jobs/{id}", "getJob", "One job's record", []opt{ok[gantry.Job]()}},
	{"GET /v1/jobs/{id}/logs", "getJobLogs", "The job's log as text (gantryd's own lines start with 0x1E)", []opt{
		follow(), answer(200, media("text/plain", schema{"type": "string"}))}},
	{"GET /v1/jobs/{id}/build", "getJobBuild", "The build's status as JSON lines, each a BuildKit client.SolveStatus", []opt{
		follow(), answer(200, lines(object()))}},
	{"GET /v1/jobs/{id}/progress", "getJobProgress", "The push's progress as JSON lines, each a Progress", []opt{
		follow(), answer(200, lines(ref[gantry.Progress]()))}},
	{"GET /v1/jobs/{id}/outputs", "getJobOutputs", "The files the job's training left in its output directory, as a tar stream (409 until copied, 404 when none kept)", []opt{
		answer(200, media("application/x-tar", binary()))}},
	{"GET /v1/jobs/{id}/metrics", "getJobMetrics", "The job's metric series; with name, that metric's; {} while there is none", []opt{
		query("name", "Only this metric's series.", str()), ok[gantry.Series]()}},
	{"POST /v1/jobs/{id}/cancel", "cancelJob", "Cancel the job in whatever state it is: 202 while it stops, 200 once ended", []opt{
		answer(202, jsonOf[gantry.Job]()), ok[gantry.Job]()}},
	{"POST /v1/jobs/{id}/push", "pushJob", "Push a finished job's image again (to its own references when to is empty)", []opt{
		query("progress", "1: once the push has begun, answer JSON lines (PushLine each), the record or the error last.", enum("1")),
		optionalBody[api.PushRequest](), ok[gantry.Job](), answer(200, lines(ref[api.PushLine]()))}},

	{"GET /v1/events", "getEvents", "The event stream (server-sent events): replays the events after since, then follows", []opt{
		query("job", "Only this job's events, ending after its terminal state.", str()),
		query("since", "Replay the events after this number.", count()),
		query("follow", "0: end once caught up.", boolean()),
		header("Last-Event-ID", "As since, when a client reconnects.", count()),
		answer(200, events())}},
	{"GET /v1/history", "getHistory", "The jobs that pushed to an image name, newest first, each marked whether name:tag holds its image", []opt{
		required(query("name", "The repository (REGISTRY/REPO).", str())),
		query("tag", "The tag whose holder is marked champion.", str()),
		ok[[]gantry.HistoryEntry]()}},
	{"POST /v1/prune", "prune", "Remove finished jobs beyond the retention (fields left out: gantryd's policy), listing everything removed; dry_run removes nothing", []opt{
		optionalBody[gantry.PruneOptions](), ok[gantry.PruneReport]()}},
	{"GET /v1/nodes", "getNodes", "Where training runs: the swarm's nodes, or the one engine, each with its jobs", []opt{ok[gantry.Cluster]()}},

	{"POST /v1/sweeps", "submitSweep", "Submit a sweep, a grid of jobs built once: body and secrets as for a job", []opt{
		spec[gantry.SweepSpec](), secretEnv(), tarBody(), created[gantry.Sweep]()}},
	{"GET /v1/sweeps", "listSweeps", "The sweeps, newest first", []opt{
		query("limit", "At most this many sweeps (0: all).", count()), ok[api.SweepList]()}},
	{"GET /v1/sweeps/{id}", "getSweep", "A sweep with its leaderboard", []opt{ok[gantry.SweepView]()}},
	{"POST /v1/sweeps/{id}/cancel", "cancelSweep", "Cancel the sweep and its unfinished points", []opt{ok[gantry.Sweep]()}},
}
