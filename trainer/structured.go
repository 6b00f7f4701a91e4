package trainer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/gantry-ml/gantry"
)

// parseMetricLine reads what follows gantry.MetricLine on a structured line:
// a JSON object with the keys name (a string), value (a finite number) and,
// optionally, step (a whole number >= 0; -1 when the line gives none). It
// returns why the line is not one, for a person to read, or "" when it is.
func parseMetricLine(payload string) (name string, value float64, step int64, why string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(payload), &fields); err != nil || fields == nil {
		// Python's json.dumps writes NaN and Infinity, which JSON has not.
		if strings.Contains(payload, "NaN") || strings.Contains(payload, "Infinity") {
			return "", 0, 0, "metric line: the value is not a finite number (NaN or Infinity)"
		}
		if err == nil {
			return "", 0, 0, "metric line: want a JSON object, like {\"name\":\"loss\",\"value\":0.31}"
		}
		return "", 0, 0, "metric line is not a JSON object: " + err.Error()
	}
	for k := range fields {
		if k != "name" && k != "value" && k != "step" {
			return "", 0, 0, fmt.Sprintf("metric line: unknown key %s; the keys are name, value and step", excerpt(k, 0))
		}
	}
	if err := json.Unmarshal(fields["name"], &name); err != nil || fields["name"] == nil {
		return "", 0, 0, "metric line: want the name as a string"
	}
	if len(name) > 64 {
		return "", 0, 0, fmt.Sprintf("metric line: name %s is over 64 bytes long", excerpt(name, 0))
	}
	if err := gantry.CheckMetricName(name); err != nil {
		return "", 0, 0, "metric line: " + err.Error()
	}
	raw := string(fields["value"])
	if raw == "" || raw[0] == '"' {
		return "", 0, 0, fmt.Sprintf("metric %s: want the value as a number", name)
	}
	value, bad := readNumber(raw)
	if bad != "" {
		return "", 0, 0, fmt.Sprintf("metric %s: value %s", name, bad)
	}
	step = -1
	if raw, ok := fields["step"]; ok && string(raw) != "null" {
		s, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || s < 0 {
			return "", 0, 0, fmt.Sprintf("metric %s: step %s is not a whole number >= 0", name, excerpt(string(raw), 0))
		}
		step = s
	}
	return name, value, step, ""
}
