package main

import (
	"bytes"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/gantry-ml/gantry/api"
)

// The committed document is what the route table and the Go types make
// now: a field added to a type, or a route to the table, without running
// go generate ./api/ fails here.
func TestDocumentCurrent(t *testing.T) {
	doc, err := Document()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc, api.OpenAPI) {
		t.Errorf("api/openapi.json is stale (%d bytes; generated now: %d): run go generate ./api/", len(api.OpenAPI), len(doc))
	}
}

// The document is valid OpenAPI 3.1, by libopenapi's reading and the
// validator's check of its schemas.
func TestDocumentValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(api.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetSpecInfo().VersionNumeric; v != 3.1 {
		t.Errorf("OpenAPI version %v; want 3.1", v)
	}
	if _, errs := doc.BuildV3Model(); errs != nil {
		t.Fatalf("build the model: %v", errs)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s (%s): %s", se.FieldPath, se.KeywordLocation, se.Reason)
			}
		}
	}
}
