package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/gantry-ml/gantry"
)

// maxDepth is how deeply a request's JSON may nest, as deep as
// encoding/json allows.
const maxDepth = 10000

// decodeStrict decodes the one JSON value in data into v, a pointer. It
// refuses with ErrInvalid what encoding/json refuses (bad syntax, wrong
// types, unknown fields with DisallowUnknownFields) and what it lets
// through: a key that matches a field's JSON name only without regard to
// case ("PUSH" for "push"), and a key given twice in one object, at any
// depth. A proxy that filters requests by their keys reads them as gantryd
// does. what begins the messages ("spec", "push request").
func decodeStrict(data []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	w := walker{dec: dec}
	if err := w.value(reflect.TypeOf(v), "", 0); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return gantry.Errorf(gantry.ErrInvalid, "%s: %v", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return gantry.Errorf(gantry.ErrInvalid, "%s: trailing data after the JSON value", what)
	}
	// The keys are known good: encoding/json checks the types.
	dec = json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return gantry.Errorf(gantry.ErrInvalid, "%s: field %q: want %s, got a JSON %s", what, te.Field, jsonKind(te.Type), te.Value)
		}
		return gantry.Errorf(gantry.ErrInvalid, "%s: %v", what, err)
	}
	return nil
}

// walker reads a JSON value token by token alongside the Go type it is
// decoded into, checking its keys.
type walker struct{ dec *json.Decoder }

// value reads one value meant for t (nil: any type; its keys are checked
// for duplicates only). path names where it is, for messages.
func (w *walker) value(t reflect.Type, path string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested deeper than %d at %q", maxDepth, path)
	}
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: encoding/json checks its type
	}
	t = shape(t)
	if d == '[' {
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for w.dec.More() {
			if err := w.value(elem, path+"[]", depth+1); err != nil {
				return err
			}
		}
		_, err := w.dec.Token()
		return err
	}
	return w.object(t, path, depth)
}

// object reads the keys and values of an object meant for t, after its '{'.
func (w *walker) object(t reflect.Type, path string, depth int) error {
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // the decoder allows only strings as keys
		if seen[key] {
			return fmt.Errorf("duplicate key %q%s", key, in(path))
		}
		seen[key] = true
		var ft reflect.Type
		switch {
		case fields != nil:
			var ok bool
			if ft, ok = fields[key]; !ok {
				return unknownField(key, path, fields)
			}
		case t != nil && t.Kind() == reflect.Map:
			ft = t.Elem()
		}
		if err := w.value(ft, join(path, key), depth+1); err != nil {
			return err
		}
	}
	_, err := w.dec.Token()
	return err
}

func unknownField(key, path string, fields map[string]reflect.Type) error {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Errorf("unknown field %q%s (keys are case-sensitive: did you mean %q?)", key, in(path), name)
		}
	}
	return fmt.Errorf("unknown field %q%s", key, in(path))
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return fmt.Sprintf(" in %q", path)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// shape is the type whose JSON shape t's value takes: pointers followed, and
// nil for an interface or a type that reads its own JSON.
func shape(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
			return nil
		}
		if t.Kind() != reflect.Pointer {
			return t
		}
		t = t.Elem()
	}
	return nil
}

// jsonFields maps the JSON names of struct t's fields to their types, the
// way encoding/json names them.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for _, f := range reflect.VisibleFields(t) {
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && shape(f.Type) != nil && shape(f.Type).Kind() == reflect.Struct {
			continue // its fields are promoted, and listed on their own
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := fields[name]; !dup {
			fields[name] = f.Type
		}
	}
	return fields
}
