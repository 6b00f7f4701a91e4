// Command openapigen writes gantry's OpenAPI 3.1 document (api/openapi.json)
// from the route table in routes.go and the Go types the API sends and
// takes. Run it with `go generate ./api/`.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func main() {
	out := flag.String("o", "openapi.json", "where to write the document")
	flag.Parse()
	doc, err := Document()
	if err == nil {
		err = os.WriteFile(*out, doc, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapigen:", err)
		os.Exit(1)
	}
}

// route is one line of the route table.
type route struct {
	route   string // "METHOD /path", as the mux registers it
	id      string // the operationId
	summary string
	with    []opt
}

// opt adds to an operation what it takes or answers.
type opt func(s *schemas, op schema)

// Document is the OpenAPI document, as indented JSON.
func Document() ([]byte, error) {
	s := newSchemas()
	paths := schema{}
	for _, r := range routes {
		method, path, found := strings.Cut(r.route, " ")
		if !found {
			return nil, fmt.Errorf("route %q: want METHOD /path", r.route)
		}
		item, _ := paths[path].(schema)
		if item == nil {
			item = schema{}
			paths[path] = item
		}
		op := schema{"operationId": r.id, "summary": r.summary, "responses": schema{
			"default": schema{"$ref": "#/components/responses/Error"}}}
		for _, name := range pathParams(path) {
			addParam(op, schema{"name": name, "in": "path", "required": true, "schema": schema{"type": "string"}})
		}
		for _, o := range r.with {
			o(s, op)
		}
		item[strings.ToLower(method)] = op
	}
	// The stream types that only descriptions name still get components.
	s.ref(reflect.TypeFor[gantry.Event]())
	errSchema := s.ref(reflect.TypeFor[api.Error]())
	var kinds []string
	var table strings.Builder
	for _, k := range api.ErrorKinds() {
		kinds = append(kinds, k.Name)
		fmt.Fprintf(&table, "| %s | %d |\n", k.Name, k.Status)
	}
	s.defs["Error"]["properties"].(schema)["kind"].(schema)["enum"] = kinds
	doc := schema{
		"openapi": "3.1.0",
		"info": schema{
			"title":   "gantry API",
			"version": api.Version,
			"description": "gantryd's REST API, as the gantry CLI speaks it, on gantryd's unix socket (--socket) or its TCP " +
				"port with mutual TLS (--tcp). JSON in requests is read strictly: exact keys, each once.\n\n" +
				"Errors answer an Error body whose kind maps to the status:\n\n| kind | status |\n| --- | --- |\n" + table.String() +
				"\nA body that came too slowly answers 408, an internal error 500, a request that looks like a browser's 403, all without a kind.",
		},
		"paths": paths,
		"components": schema{
			"schemas": s.defs,
			"responses": schema{"Error": schema{
				"description": "The request failed: the status is the error kind's.",
				"content":     schema{"application/json": schema{"schema": errSchema}},
			}},
		},
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

var pathParam = regexp.MustCompile(`\{([a-z_]+)\}`)

func pathParams(path string) []string {
	var out []string
	for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
		out = append(out, m[1])
	}
	return out
}

func addParam(op schema, p schema) {
	ps, _ := op["parameters"].([]schema)
	op["parameters"] = append(ps, p)
}

// A body is a media type's schema.
type body func(s *schemas) (mediaType string, sc schema)

// answer adds a response with status: several answers with one status are
// its media types.
func answer(status int, b body) opt {
	return func(s *schemas, op schema) {
		code := strconv.Itoa(status)
		resps := op["responses"].(schema)
		resp, _ := resps[code].(schema)
		if resp == nil {
			resp = schema{"description": statusText(status), "content": schema{}}
			resps[code] = resp
		}
		mt, sc := b(s)
		resp["content"].(schema)[mt] = schema{"schema": sc}
	}
}

func statusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 202:
		return "Accepted"
	}
	return strconv.Itoa(status)
}

// ok answers 200 with a T as JSON; created 201.
func ok[T any]() opt      { return answer(200, jsonOf[T]()) }
func created[T any]() opt { return answer(201, jsonOf[T]()) }

func jsonOf[T any]() body {
	return func(s *schemas) (string, schema) { return "application/json", s.of(reflect.TypeFor[T]()) }
}

func jsonAny() body {
	return func(*schemas) (string, schema) { return "application/json", schema{"type": "object"} }
}

func media(mt string, sc schema) body { return func(*schemas) (string, schema) { return mt, sc } }

func plain(s string) body { return media("text/plain", schema{"type": "string", "const": s}) }

// lines is JSON lines (application/x-ndjson): the schema is of the list
// of the stream's values, one a line.
func lines(item func(*schemas) schema) body {
	return func(s *schemas) (string, schema) {
		return "application/x-ndjson", schema{"type": "array", "items": item(s),
			"description": "JSON lines: one value a line; the schema is of the list of the lines' values."}
	}
}

// events is a server-sent event stream: the schema is of the list of its
// events, each with its fields; data is an Event. Comment lines (": keep-alive")
// keep an idle stream alive.
func events() body {
	return func(s *schemas) (string, schema) {
		return "text/event-stream", schema{
			"type":        "array",
			"description": "Server-sent events; the schema is of the list of the stream's events (comment lines left out).",
			"items": schema{"type": "object", "additionalProperties": false, "required": []string{"id", "event", "data"},
				"properties": schema{
					"id":    schema{"type": "string", "pattern": "^[0-9]+$", "description": "The event's seq."},
					"event": schema{"type": "string", "enum": []string{gantry.EventState, gantry.EventAccuracy, gantry.EventPush, gantry.EventSweep}},
					"data":  s.of(reflect.TypeFor[gantry.Event]()),
				}},
		}
	}
}

func ref[T any]() func(*schemas) schema {
	return func(s *schemas) schema { return s.of(reflect.TypeFor[T]()) }
}

func enumRef[T any]() func(*schemas) schema { return ref[T]() }

func object() func(*schemas) schema {
	return func(*schemas) schema { return schema{"type": "object"} }
}

func str() func(*schemas) schema { return func(*schemas) schema { return schema{"type": "string"} } }

func binary() schema { return schema{"type": "string", "contentMediaType": "application/x-tar"} }

func count() func(*schemas) schema {
	return func(*schemas) schema { return schema{"type": "integer", "minimum": 0} }
}

func enum(vals ...string) func(*schemas) schema {
	return func(*schemas) schema { return schema{"type": "string", "enum": vals} }
}

// boolean is what strconv.ParseBool takes.
func boolean() func(*schemas) schema {
	return enum("1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE", "False")
}

func arrayOf(item func(*schemas) schema) func(*schemas) schema {
	return func(s *schemas) schema { return schema{"type": "array", "items": item(s)} }
}

func param(in, name, desc string, sc func(*schemas) schema) opt {
	return func(s *schemas, op schema) {
		addParam(op, schema{"name": name, "in": in, "description": desc, "schema": sc(s)})
	}
}

func query(name, desc string, sc func(*schemas) schema) opt  { return param("query", name, desc, sc) }
func header(name, desc string, sc func(*schemas) schema) opt { return param("header", name, desc, sc) }

// required makes the parameter o adds required.
func required(o opt) opt {
	return func(s *schemas, op schema) {
		o(s, op)
		ps := op["parameters"].([]schema)
		ps[len(ps)-1]["required"] = true
	}
}

func follow() opt {
	return query("follow", "1 or true: stream until the job ends.", boolean())
}

// spec is a submission's spec: JSON in the query parameter spec.
func spec[T any]() opt {
	return func(s *schemas, op schema) {
		addParam(op, schema{"name": "spec", "in": "query",
			"description": fmt.Sprintf("The spec as JSON (at most %d bytes), read strictly; absent: {}.", api.MaxSpecBytes),
			"content":     schema{"application/json": schema{"schema": s.inputs().of(reflect.TypeFor[T]())}}})
	}
}

func secretEnv() opt {
	return func(s *schemas, op schema) {
		addParam(op, schema{"name": api.SecretEnvHeader, "in": "header",
			"description": fmt.Sprintf("The values of the spec's secret_env: standard base64 of a JSON object from each name to its value (at most %d bytes); held in gantryd's memory only.", api.MaxSecretBytes),
			"schema":      schema{"type": "string", "contentEncoding": "base64", "contentMediaType": "application/json"}})
	}
}

func tarBody() opt {
	return func(s *schemas, op schema) {
		op["requestBody"] = schema{"required": true, "description": "The build context, as docker build sends it.",
			"content": schema{"application/x-tar": schema{"schema": binary()}}}
	}
}

func optionalBody[T any]() opt {
	return func(s *schemas, op schema) {
		op["requestBody"] = schema{"required": false,
			"content": schema{"application/json": schema{"schema": s.inputs().of(reflect.TypeFor[T]())}}}
	}
}
