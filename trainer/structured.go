package trainer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/gantry-ml/gantry"
)

// metricFields are the fields of a structured line as written: name
// decoded, value and step as their JSON text ("" when absent).
type metricFields struct {
	name        string
	nameIsText  bool
	value, step string
}

// parseMetricLine reads what follows gantry.MetricLine on a structured line:
// a JSON object with the keys name (a string), value (a finite number) and,
// optionally, step (a whole number >= 0; -1 when the line gives none or
// null). It returns why the line is not one, for a person to read, or ""
// when it is.
func parseMetricLine(payload string) (name string, value float64, step int64, why string) {
	f, ok := scanMetricLine(payload)
	if !ok {
		if f, why = decodeMetricLine(payload); why != "" {
			return "", 0, 0, why
		}
	}
	if !f.nameIsText {
		return "", 0, 0, "metric line: want the name as a string"
	}
	if len(f.name) > 64 {
		return "", 0, 0, fmt.Sprintf("metric line: name %s is over 64 bytes long", excerpt(f.name, 0))
	}
	if err := gantry.CheckMetricName(f.name); err != nil {
		return "", 0, 0, "metric line: " + err.Error()
	}
	if f.value == "" || f.value[0] == '"' {
		return "", 0, 0, fmt.Sprintf("metric %s: want the value as a number", f.name)
	}
	value, bad := readNumber(f.value)
	if bad != "" {
		return "", 0, 0, fmt.Sprintf("metric %s: value %s", f.name, bad)
	}
	step = -1
	if f.step != "" && f.step != "null" {
		s, err := strconv.ParseInt(f.step, 10, 64)
		if err != nil || s < 0 {
			return "", 0, 0, fmt.Sprintf("metric %s: step %s is not a whole number >= 0", f.name, short(f.step))
		}
		step = s
	}
	return f.name, value, step, ""
}

// decodeMetricLine decodes the JSON object with encoding/json: the slow
// path, which says what is wrong with a line.
func decodeMetricLine(payload string) (metricFields, string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(payload), &fields); err != nil || fields == nil {
		// Python's json.dumps writes NaN and Infinity, which JSON has not.
		if strings.Contains(payload, "NaN") || strings.Contains(payload, "Infinity") {
			return metricFields{}, "metric line: the value is not a finite number (NaN or Infinity)"
		}
		if err == nil {
			return metricFields{}, `metric line: want a JSON object, like {"name":"loss","value":0.31}`
		}
		return metricFields{}, "metric line is not a JSON object: " + err.Error()
	}
	for k := range fields {
		if k != "name" && k != "value" && k != "step" {
			return metricFields{}, fmt.Sprintf("metric line: unknown key %s; the keys are name, value and step", excerpt(k, 0))
		}
	}
	var f metricFields
	if raw, ok := fields["name"]; ok {
		f.nameIsText = json.Unmarshal(raw, &f.name) == nil && raw[0] == '"'
	}
	f.value, f.step = string(fields["value"]), string(fields["step"])
	return f, ""
}

// jsonNumber is a number as JSON writes it.
var jsonNumber = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$`)

// scanMetricLine reads the common shape of the line without allocating:
// a flat object of the three keys, each at most once, the name a string
// without escapes, value and step numbers (or null). It reports false for
// anything else, which decodeMetricLine then reads.
func scanMetricLine(s string) (f metricFields, ok bool) {
	s = strings.Trim(s, " \t")
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return f, false
	}
	s = s[1 : len(s)-1]
	for {
		key, rest, ok := scanString(strings.TrimLeft(s, " \t"))
		if !ok {
			return f, false
		}
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" || rest[0] != ':' {
			return f, false
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		var raw string
		if key == "name" {
			if f.nameIsText {
				return f, false
			}
			f.name, rest, ok = scanString(rest)
			f.nameIsText = ok
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			raw, rest = strings.TrimRight(rest[:end], " \t"), rest[end:]
			ok = raw == "null" || jsonNumber.MatchString(raw)
		}
		switch {
		case !ok:
			return f, false
		case key == "value" && f.value == "":
			f.value = raw
		case key == "step" && f.step == "":
			f.step = raw
		case key != "name":
			return f, false // unknown, or given twice
		}
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			return f, true
		}
		if rest[0] != ',' {
			return f, false
		}
		s = rest[1:]
	}
}

// scanString reads a JSON string without escapes or control characters
// at the start of s, and returns its text and what follows.
func scanString(s string) (text, rest string, ok bool) {
	if s == "" || s[0] != '"' {
		return "", s, false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", s, false
	}
	text = s[1 : 1+end]
	for i := 0; i < len(text); i++ {
		if text[i] == '\\' || text[i] < 0x20 {
			return "", s, false
		}
	}
	return text, s[2+end:], true
}
