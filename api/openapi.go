package api

// The API's contract: an OpenAPI 3.1 document, generated from the route
// table and the Go types in internal/openapigen, kept in the repository and
// served by the daemon. Tests check it against the mux (every route, both
// ways) and against real requests and responses (integration/openapi_test.go).

import (
	_ "embed"
	"net/http"
)

//go:generate go run ./internal/openapigen -o openapi.json

// OpenAPI is the API's OpenAPI 3.1 document (JSON), as GET /v1/openapi.json
// serves it.
//
//go:embed openapi.json
var OpenAPI []byte

// ErrorKind is one row of the table between error kinds and statuses: the
// kind's name in an Error body and the HTTP status it answers with.
type ErrorKind struct {
	Name   string
	Status int
}

// ErrorKinds lists the error kinds an Error body names, with their statuses,
// in the order of the table statusOf reads.
func ErrorKinds() []ErrorKind {
	out := make([]ErrorKind, len(kinds))
	for i, k := range kinds {
		out[i] = ErrorKind{Name: k.name, Status: k.status}
	}
	return out
}

// openapi serves GET /v1/openapi.json.
func (s *server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(OpenAPI)
}
