package main

// JSON Schemas (2020-12, as OpenAPI 3.1 takes them) of the Go types the API
// writes and reads, made by reflection with encoding/json's rules, so the
// document says what the code sends: a field is required unless encoding/json
// may leave it out (omitempty of an empty value, omitzero), and a slice, map
// or pointer that may be nil is nullable.

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/gantry-ml/gantry"
)

// schema is one JSON Schema object.
type schema = map[string]any

// overrides are the schemas of types that encode themselves (MarshalJSON,
// MarshalText) or that a plain reflection would say too little of. A type
// that marshals itself and has no entry here stops the generator.
var overrides = map[reflect.Type]schema{
	reflect.TypeFor[time.Time](): {"type": "string", "format": "date-time"},
	reflect.TypeFor[gantry.Duration](): {"type": "string", "pattern": `^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$|^[-+]?0$`,
		"description": `A Go duration, like "90s" or "1h30m".`},
}

// enums are named string types whose values are a closed list: each becomes
// a component with that enum.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[gantry.State](): states(),
}

func states() []string {
	var out []string
	for _, s := range gantry.States {
		out = append(out, string(s))
	}
	return out
}

// schemas collects the components: one per named struct type (and enum),
// by the type's name; the types a request takes have a second, NameInput,
// where no field is required (a request may leave out any key: it is read
// into a zero value).
type schemas struct {
	defs  map[string]schema
	types map[string]reflect.Type
	input bool
}

func newSchemas() *schemas {
	return &schemas{defs: map[string]schema{}, types: map[string]reflect.Type{}}
}

// inputs is s for what requests take.
func (s *schemas) inputs() *schemas {
	return &schemas{defs: s.defs, types: s.types, input: true}
}

// ref returns a reference to t's component, making it first.
func (s *schemas) ref(t reflect.Type) schema {
	name := t.Name()
	if _, enum := enums[t]; s.input && !enum {
		name += "Input"
	}
	if prev, ok := s.types[name]; ok {
		if prev != t {
			panic(fmt.Sprintf("openapigen: two types named %s (%s and %s): give one a distinct name", name, prev, t))
		}
		return schema{"$ref": "#/components/schemas/" + name}
	}
	s.types[name] = t
	if vals, ok := enums[t]; ok {
		s.defs[name] = schema{"type": "string", "enum": vals}
	} else {
		s.defs[name] = s.object(t)
	}
	return schema{"$ref": "#/components/schemas/" + name}
}

// of returns the schema of a value of type t as encoding/json writes it.
func (s *schemas) of(t reflect.Type) schema {
	if o, ok := overrides[t]; ok {
		return o
	}
	if _, ok := enums[t]; ok {
		return s.ref(t)
	}
	if t.Kind() == reflect.Pointer {
		return nullable(s.of(t.Elem()))
	}
	if marshals(t) {
		panic(fmt.Sprintf("openapigen: %s encodes itself: add its schema to overrides", t))
	}
	switch t.Kind() {
	case reflect.Struct:
		if t.Name() == "" {
			return s.object(t)
		}
		return s.ref(t)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return schema{"type": "string", "contentEncoding": "base64"}
		}
		sc := schema{"type": "array", "items": s.of(t.Elem())}
		if t.Kind() == reflect.Slice {
			sc = nullable(sc)
		}
		return sc
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			panic(fmt.Sprintf("openapigen: %s: only string keys", t))
		}
		return nullable(schema{"type": "object", "additionalProperties": s.of(t.Elem())})
	case reflect.String:
		return schema{"type": "string"}
	case reflect.Bool:
		return schema{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return schema{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return schema{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return schema{"type": "number"}
	case reflect.Interface:
		return schema{}
	}
	panic(fmt.Sprintf("openapigen: no schema for %s", t))
}

// object is a struct's schema: its fields by their JSON names; no others.
func (s *schemas) object(t reflect.Type) schema {
	props := schema{}
	required := []string{}
	s.fields(t, props, &required)
	sc := schema{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 && !s.input {
		sc["required"] = required
	}
	return sc
}

// fields adds t's fields to props, and those always written to required;
// an embedded struct without a name of its own lends its fields, as
// encoding/json does.
func (s *schemas) fields(t reflect.Type, props schema, required *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			s.fields(f.Type, props, required)
			continue
		}
		if name == "" {
			name = f.Name
		}
		sc := s.of(f.Type)
		omit := omittable(f.Type, opts)
		if omit {
			// What encoding/json leaves out when empty is never null.
			sc = notNull(sc)
		}
		props[name] = sc
		if !omit {
			*required = append(*required, name)
		}
	}
}

// omittable reports whether encoding/json may leave a field of type t with
// the tag's options out.
func omittable(t reflect.Type, opts string) bool {
	has := func(o string) bool {
		for _, x := range strings.Split(opts, ",") {
			if x == o {
				return true
			}
		}
		return false
	}
	if has("omitzero") {
		return true
	}
	if !has("omitempty") {
		return false
	}
	switch t.Kind() {
	case reflect.Struct:
		return false
	case reflect.Array:
		return t.Len() == 0
	}
	return true
}

// nullable lets sc be null too.
func nullable(sc schema) schema {
	if typ, ok := sc["type"].(string); ok {
		out := schema{}
		for k, v := range sc {
			out[k] = v
		}
		out["type"] = []string{typ, "null"}
		return out
	}
	return schema{"anyOf": []schema{sc, {"type": "null"}}}
}

// notNull undoes nullable.
func notNull(sc schema) schema {
	if any, ok := sc["anyOf"].([]schema); ok && len(any) == 2 && any[1]["type"] == "null" {
		return any[0]
	}
	if typ, ok := sc["type"].([]string); ok && len(typ) == 2 && typ[1] == "null" {
		out := schema{}
		for k, v := range sc {
			out[k] = v
		}
		out["type"] = typ[0]
		return out
	}
	return sc
}

// marshals reports whether t (or *t) encodes itself.
func marshals(t reflect.Type) bool {
	for _, u := range []reflect.Type{t, reflect.PointerTo(t)} {
		if u.Implements(reflect.TypeFor[json.Marshaler]()) || u.Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
			return true
		}
	}
	return false
}
