package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/trainer"
)

// FuzzDecodeSpec feeds DecodeSpec arbitrary bytes, as the spec query
// parameter of a submission would. Whatever it decodes either fails
// Validate with ErrInvalid, or is a spec that survives being written out as
// JSON and read back: the record gantry keeps is what was accepted.
func FuzzDecodeSpec(f *testing.F) {
	seeds := []string{
		// A spec with every field set.
		`{
			"build": {"dockerfile": "docker/train.Dockerfile", "build_args": {"EPOCHS": "3", "LR": "0.1"}, "target": "train"},
			"push": ["127.0.0.1:5000/iris:v1", "registry.example.com/team/iris:latest"],
			"min_accuracy": 0.9,
			"metric_regex": "acc=([0-9.]+)",
			"timeouts": {"build": "10m", "train": "1h30m", "push": "90s"},
			"resources": {"memory": 536870912, "cpus": 1.5, "pids_limit": 256},
			"sandbox": {"network": "bridge", "cap_add": ["NET_BIND_SERVICE", "cap_chown"]}
		}`,
		`{}`,
		`{"min_accuracy": 0}`,
		`{"push": ["127.0.0.1:5000/iris"], "promote": "best", "min_improvement": 0.01}`,
		`{"build": {"build_args": {}}, "push": [], "sandbox": {"cap_add": []}}`,
		// Unknown fields, at the top and nested.
		`{"pushh": ["x"]}`,
		`{"build": {"dockerfle": "x"}}`,
		`{"resources": {"gpus": 1}}`,
		// Keys matched without regard to case, and given twice.
		`{"PUSH": ["127.0.0.1:5000/a"], "Min_Accuracy": 0.5}`,
		`{"push": ["127.0.0.1:5000/a"], "push": ["127.0.0.1:5000/b"]}`,
		`{"push": [], "\u0070ush": ["127.0.0.1:5000/b"]}`,
		`{"build": {"Dockerfile": "x"}, "ſandbox": {}}`,
		`{"build": {"build_args": {"A": "1", "a": "2", "A": "3"}}}`,
		`{"timeouts": {"build": "1m", "build": "2h"}}`,
		`{"timeouts": {"train": {"x": 1, "x": [{"y": 1, "y": 2}]}}}`,
		`{"push": [{"a": 1, "a": 2}]}`,
		// Wrong types.
		`{"push": "registry.example.com/iris"}`,
		`{"min_accuracy": "0.9"}`,
		`{"build": {"dockerfile": 7}}`,
		`{"build": {"build_args": {"EPOCHS": 3}}}`,
		`{"build": []}`,
		`{"timeouts": {"build": 600}}`,
		`{"resources": {"memory": 1.5}}`,
		`{"resources": {"pids_limit": "many"}}`,
		`{"sandbox": {"cap_add": "ALL"}}`,
		`[]`,
		`"spec"`,
		`42`,
		// Deep nesting, past encoding/json's limit and inside a known field.
		`{"build": {"build_args": ` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}}`,
		strings.Repeat(`{"build":`, 200) + `{}` + strings.Repeat(`}`, 200),
		// Huge and odd numbers.
		`{"min_accuracy": 1e400}`,
		`{"min_accuracy": -1e-400}`,
		`{"min_accuracy": -0}`,
		`{"resources": {"memory": 9223372036854775808}}`,
		`{"resources": {"memory": -9223372036854775808}}`,
		`{"resources": {"memory": 6291455}}`,
		`{"resources": {"cpus": 1e6}}`,
		`{"resources": {"cpus": 1.0000000000000002e6}}`,
		`{"timeouts": {"train": "2562047h47m16.854775807s"}}`,
		`{"timeouts": {"train": "2562047h47m16.854775808s"}}`,
		`{"timeouts": {"push": "-1s"}}`,
		`{"timeouts": {"build": "0s", "train": null}}`,
		// NaN-ish strings where numbers and durations belong.
		`{"min_accuracy": NaN}`,
		`{"min_accuracy": "NaN"}`,
		`{"resources": {"cpus": "Infinity"}}`,
		`{"timeouts": {"build": "NaN"}}`,
		`{"timeouts": {"build": "\u0031\u0030s"}}`,
		`{"timeouts": {"build": "10\/s"}}`,
		// Strings that Validate must look at.
		`{"build": {"dockerfile": "/etc/passwd"}}`,
		`{"build": {"dockerfile": "a/../../Dockerfile"}}`,
		`{"build": {"build_args": {"A=B": "x", "": "y"}}}`,
		`{"sandbox": {"network": "host"}}`,
		`{"sandbox": {"network": "-x"}}`,
		`{"sandbox": {"cap_add": ["cap_cap_"]}}`,
		`{"sandbox": {"cap_add": ["all"]}}`,
		`{"push": ["Not A Reference!"]}`,
		`{"metric_regex": "("}`,
		`{"metric_regex": "a*"}`,
		"{\"build\": {\"target\": \"\xff\xfe\"}}",
		"{\"build\": {\"target\": \"\\ud800\"}}",
		// Trailing data.
		`{} {"push": ["x"]}`,
		`{"push": ["x"]}]`,
		`{}}`,
		`{} `,
		"{}\n\n",
		// Nothing at all.
		``,
		` `,
		`null`,
		`{"build": null, "push": null, "timeouts": null}`,
		`{"push": [`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := DecodeSpec(data)
		if err != nil {
			if !errors.Is(err, gantry.ErrInvalid) && !errors.Is(err, gantry.ErrTooLarge) {
				t.Fatalf("DecodeSpec(%.300q): error %q is of kind %v, want ErrInvalid or ErrTooLarge", data, err, gantry.Kind(err))
			}
			return
		}
		if err := trainer.CheckSpec(&spec); err != nil {
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Fatalf("Validate of the spec %.300q: error %q is of kind %v, want ErrInvalid", data, err, gantry.Kind(err))
			}
			return
		}
		out, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("json.Marshal of the valid spec %.300q: %v", data, err)
		}
		again, err := DecodeSpec(out)
		if err != nil {
			t.Fatalf("the valid spec %.300q (%d bytes), written back out as %.300s (%d bytes), does not decode: %v", data, len(data), out, len(out), err)
		}
		if got, want := normalize(again), normalize(spec); !reflect.DeepEqual(got, want) {
			t.Fatalf("the valid spec %.300q, written back out as %.300s, reads back as\n%+v\nwant\n%+v", data, out, got, want)
		}
	})
}

// normalize returns s with its empty lists and maps as nil: JSON leaves
// both out alike, and they mean the same.
func normalize(s gantry.Spec) gantry.Spec {
	if len(s.Build.BuildArgs) == 0 {
		s.Build.BuildArgs = nil
	}
	if len(s.Push) == 0 {
		s.Push = nil
	}
	if len(s.Sandbox.CapAdd) == 0 {
		s.Sandbox.CapAdd = nil
	}
	return s
}
