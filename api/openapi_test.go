package api

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// documented returns the document's operations as the mux's patterns
// ("GET /v1/jobs/{id}").
func documented(t *testing.T) []string {
	t.Helper()
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi.json: openapi %q; want 3.1.0", doc.OpenAPI)
	}
	var out []string
	for path, item := range doc.Paths {
		for method := range item {
			out = append(out, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(out)
	return out
}

// registered returns the patterns the package's code registers on a mux:
// the string literal of every X.HandleFunc or X.Handle call outside tests,
// but the catch-all "/".
func registered(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: a route registered with a pattern that is not a literal: the document cannot be checked against it", fset.Position(call.Pos()))
				return true
			}
			if p, _ := strconv.Unquote(lit.Value); p != "/" {
				out = append(out, p)
			}
			return true
		})
	}
	slices.Sort(out)
	return out
}

// Every route the mux serves is in the OpenAPI document, and every
// operation of the document is a route.
func TestRoutesDocumented(t *testing.T) {
	doc, mux := documented(t), registered(t)
	if len(mux) < 20 {
		t.Fatalf("found %d routes in the package's code: %q; the parse missed some", len(mux), mux)
	}
	for _, r := range mux {
		if !slices.Contains(doc, r) {
			t.Errorf("route %q is served but not in openapi.json: add it to internal/openapigen/routes.go and run go generate ./api/", r)
		}
	}
	for _, r := range doc {
		if !slices.Contains(mux, r) {
			t.Errorf("openapi.json has %q, which no mux.HandleFunc registers", r)
		}
	}
}

// Each documented operation reaches a handler of its own, not the
// catch-all that answers "no such endpoint".
func TestDocumentedRoutesServed(t *testing.T) {
	h := handler(&fakeService{}, nil)
	for _, r := range documented(t) {
		method, path, _ := strings.Cut(r, " ")
		path = strings.ReplaceAll(path, "{id}", "j1")
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(method, path+"?name=x", nil)
		h.ServeHTTP(rec, req)
		if body := rec.Body.String(); rec.Code == http.StatusMethodNotAllowed || strings.Contains(body, "no such endpoint") {
			t.Errorf("%s %s: %d %s; want a route of its own", method, path, rec.Code, body)
		}
	}
}

// GET /v1/openapi.json serves the document as JSON.
func TestOpenAPIServed(t *testing.T) {
	s := httptest.NewServer(handler(&fakeService{}, nil))
	defer s.Close()
	resp, err := http.Get(s.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || string(body) != string(OpenAPI) {
		t.Errorf("GET /v1/openapi.json: %d %s, %d bytes; want 200 application/json, the %d bytes of openapi.json",
			resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(OpenAPI))
	}
}
