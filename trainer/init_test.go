package trainer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

var fileNames = []string{".dockerignore", "Dockerfile", "app.py", "gantry_metrics.py", "requirements.txt"}

func TestFiles(t *testing.T) {
	files := Files("")
	var names []string
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	if !slices.Equal(names, fileNames) {
		t.Fatalf("Files: got %q; want %q", names, fileNames)
	}
	musts := map[string][]string{
		"Dockerfile": {
			"ARG BASE=python:3.10-slim\nFROM ${BASE}\n",
			`RUN python3 -c "import sklearn, pandas, joblib" 2>/dev/null || pip install --no-cache-dir -r requirements.txt`,
			`ENTRYPOINT ["python3", "app.py"]`,
		},
		"requirements.txt": {"scikit-learn==1.0.2\n", "pandas==1.3.5\n", "joblib==1.1.0\n"},
		"app.py": {
			"load_iris()", "pd.DataFrame(", "test_size=0.2, random_state=42",
			`print(f"Model accuracy: {accuracy:.4f}", flush=True)`,
			// Where gantryd says, in the form gantry's constants give it.
			fmt.Sprintf("os.environ.get(%q, %q)", gantry.OutputDirEnv, gantry.DefaultOutputDir),
			`joblib.dump(model, MODEL)`, `"--evaluate"`,
		},
		".dockerignore": {"*.joblib\n", "__pycache__\n", ".git\n"},
	}
	for name, subs := range musts {
		for _, s := range subs {
			if !bytes.Contains(files[name], []byte(s)) {
				t.Errorf("%s does not hold %q", name, s)
			}
		}
	}
	// With a CMD, `docker run IMAGE --evaluate` would run "--evaluate".
	if bytes.Contains(files["Dockerfile"], []byte("\nCMD ")) {
		t.Errorf("Dockerfile has a CMD: arguments of docker run would replace it, not reach app.py")
	}
	if bytes.Contains(files["Dockerfile"], []byte("# syntax")) {
		t.Errorf("Dockerfile has a syntax line: the engine would pull a frontend image for it")
	}
}

// TestAppReportsOneAccuracy checks that the reference program prints nothing
// else that the default pattern would take for its accuracy: its one accuracy
// line is the only line of app.py that mentions the word.
func TestAppReportsOneAccuracy(t *testing.T) {
	var n int
	for _, l := range strings.Split(string(Files("")["app.py"]), "\n") {
		if strings.Contains(l, "print(") && strings.Contains(strings.ToLower(l), "accuracy") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("app.py prints accuracy on %d lines; want 1", n)
	}
	r := defaultPattern.NewReader()
	r.Line("Model accuracy: 0.9667")
	if got, err := r.Accuracy(); err != nil || got != 0.9667 {
		t.Errorf("the line app.py prints reads as %v, %v; want 0.9667", got, err)
	}
}

func TestFilesBase(t *testing.T) {
	const base = "localhost:5000/python-ml:bookworm"
	before := strings.Split(string(Files("")["Dockerfile"]), "\n")
	after := strings.Split(string(Files(base)["Dockerfile"]), "\n")
	if len(before) != len(after) {
		t.Fatalf("Dockerfile has %d lines with a base, %d without", len(after), len(before))
	}
	for i := range before {
		want := before[i]
		if want == "ARG BASE=python:3.10-slim" {
			want = "ARG BASE=" + base
		}
		if after[i] != want {
			t.Errorf("line %d: got %q; want %q", i+1, after[i], want)
		}
	}
	for name, b := range Files(base) {
		if name != "Dockerfile" && !bytes.Equal(b, Files("")[name]) {
			t.Errorf("%s changed with the base", name)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x", "y")
	const base = "gantry/python-ml:bookworm"
	if err := Write(dir, base); err != nil {
		t.Fatalf("Write: %v", err)
	}
	want := Files(base)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("dir has %d entries; want %d", len(entries), len(want))
	}
	for name, content := range want {
		path := filepath.Join(dir, name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("read %s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s: got %q; want %q", name, got, content)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode(); !m.IsRegular() || m.Perm()&^0o022 != 0o644 {
			t.Errorf("%s: mode %v; want a regular file, 0644 less the umask", name, m)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		t.Fatalf("stat %s: %v", dir, err)
	}
	if got := fi.Mode().Perm() &^ 0o022; got != 0o755 {
		t.Errorf("dir mode %v; want 0755 less the umask", fi.Mode().Perm())
	}

	// Writing again conflicts, on the first file there is.
	err = Write(dir, "")
	if !errors.Is(err, gantry.ErrConflict) {
		t.Errorf("second Write: got %v; want ErrConflict", err)
	}
}

func TestWriteRefuses(t *testing.T) {
	dir := t.TempDir()
	mine := []byte("print('mine')\n")
	if err := os.WriteFile(filepath.Join(dir, "app.py"), mine, 0o600); err != nil {
		t.Fatal(err)
	}
	err := Write(dir, "")
	if !errors.Is(err, gantry.ErrConflict) {
		t.Fatalf("Write: got %v; want ErrConflict", err)
	}
	for _, s := range []string{"app.py", "nothing was written"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "app.py" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %q; want only app.py", names)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "app.py")); !bytes.Equal(got, mine) {
		t.Errorf("app.py changed to %q", got)
	}
}

func TestWriteRefusesSymlink(t *testing.T) {
	// A dangling link is still a file that is there: writing through it
	// would create a file somewhere else.
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Symlink(target, filepath.Join(dir, "Dockerfile")); err != nil {
		t.Skip(err)
	}
	if err := Write(dir, ""); !errors.Is(err, gantry.ErrConflict) {
		t.Errorf("Write: got %v; want ErrConflict", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
}

func TestWriteBadBase(t *testing.T) {
	for _, base := range []string{"python\nRUN rm -rf /", "python 3", "-x", "py\x00thon", "py\u2028thon"} {
		dir := filepath.Join(t.TempDir(), "x")
		err := Write(dir, base)
		if !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("Write(%q): got %v; want ErrInvalid", base, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Write(%q) created %s", base, dir)
		}
	}
}

func TestAppCompiles(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not on PATH")
	}
	dir := t.TempDir()
	if err := Write(dir, ""); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-m", "py_compile", filepath.Join(dir, "app.py")).CombinedOutput()
	if err != nil {
		t.Errorf("python3 -m py_compile app.py: %v\n%s", err, out)
	}
}
