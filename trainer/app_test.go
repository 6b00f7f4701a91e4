package trainer

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestApp runs the reference app.py as a job and then its pushed image
// would: training writes model.joblib into $GANTRY_OUTPUT_DIR, and
// --evaluate loads it, trains nothing, and prints the accuracy training
// printed. It uses scikit-learn, pandas and joblib when the host's python3
// has them, else the stand-ins in testdata/fakeml (the integration tests
// run it on the real ones, in the base image).
func TestApp(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), Files("")["app.py"], 0o644); err != nil {
		t.Fatal(err)
	}
	fits := filepath.Join(dir, "fits")
	env := []string{"PYTHONDONTWRITEBYTECODE=1", "FAKEML_FITS=" + fits}
	if exec.Command(python, "-c", "import sklearn, pandas, joblib").Run() != nil {
		fake, err := filepath.Abs(filepath.Join("testdata", "fakeml"))
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "PYTHONPATH="+fake)
		t.Log("python3 lacks scikit-learn, pandas or joblib: using testdata/fakeml")
	}
	out := filepath.Join(dir, "out", "model") // not there yet: training makes it
	run := func(args ...string) (stdout, stderr string, err error) {
		t.Helper()
		cmd := exec.Command(python, append([]string{"app.py"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append(env, "GANTRY_OUTPUT_DIR="+out)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}

	// Evaluating before any training fails, and says why.
	stdout, stderr, err := run("--evaluate")
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("app.py --evaluate with no model: got %v; want a non-zero exit\n%s%s", err, stdout, stderr)
	}
	model := filepath.Join(out, "model.joblib")
	if want := "No model at " + model; !strings.Contains(stderr, want) {
		t.Errorf("app.py --evaluate with no model: stderr %q; want it to say %q", stderr, want)
	}
	if _, err := accuracyOf(stdout); err == nil {
		t.Errorf("app.py --evaluate with no model reported an accuracy:\n%s", stdout)
	}

	stdout, stderr, err = run()
	if err != nil {
		t.Fatalf("app.py: %v\n%s%s", err, stdout, stderr)
	}
	trained, err := accuracyOf(stdout)
	if err != nil {
		t.Fatalf("app.py: %v\n%s", err, stdout)
	}
	if fi, err := os.Stat(model); err != nil || fi.Size() == 0 {
		t.Fatalf("app.py left no model at $GANTRY_OUTPUT_DIR/model.joblib: %v", err)
	}

	stdout, stderr, err = run("--evaluate")
	if err != nil {
		t.Fatalf("app.py --evaluate: %v\n%s%s", err, stdout, stderr)
	}
	evaluated, err := accuracyOf(stdout)
	if err != nil {
		t.Fatalf("app.py --evaluate: %v\n%s", err, stdout)
	}
	if evaluated != trained {
		t.Errorf("app.py --evaluate printed accuracy %v; training printed %v", evaluated, trained)
	}
	if strings.Contains(stdout, "Training") {
		t.Errorf("app.py --evaluate trained:\n%s", stdout)
	}
	if b, err := os.ReadFile(fits); err == nil && string(b) != "fit\n" {
		t.Errorf("the model was fitted %d times; want once, by training", strings.Count(string(b), "fit"))
	}
}

// accuracyOf reads the accuracy from a program's output as gantry does.
func accuracyOf(out string) (float64, error) {
	r := defaultPattern.NewReader()
	for _, l := range strings.Split(out, "\n") {
		r.Line(l)
	}
	return r.Accuracy()
}
