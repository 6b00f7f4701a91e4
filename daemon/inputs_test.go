package daemon

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/treesum"
	"github.com/gantry-ml/gantry/runner"
)

// The values of --secret-env must be exactly those the spec names: a value
// missing, one more, or one no environment can hold is refused at submit,
// and nothing is kept.
func TestSubmitRefusesSecretsNotMatchingSecretEnv(t *testing.T) {
	named := gantry.Spec{Run: gantry.RunSpec{SecretEnv: []string{"TOKEN", "KEY"}}}
	for _, tc := range []struct {
		name    string
		spec    gantry.Spec
		secrets map[string]string
		want    string
	}{
		{"a value missing", named, map[string]string{"TOKEN": "t"}, "secret-env KEY: no value came"},
		{"none sent", named, nil, "secret-env TOKEN: no value came"},
		{"one more", named, map[string]string{"TOKEN": "t", "KEY": "k", "MORE": "m"}, `"MORE"`},
		{"none named", gantry.Spec{}, map[string]string{"TOKEN": "t"}, `"TOKEN"`},
		{"a NUL byte", named, map[string]string{"TOKEN": "t\x00", "KEY": "k"}, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := pipeNewRig(t, 1, pipeNewFakes(t))
			_, err := rig.d.Submit(context.Background(), tc.spec, tc.secrets, pipeTar(t, pipeContext()))
			if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Submit: %v; want ErrInvalid saying %s", err, tc.want)
			}
			assertNothingKept(t, rig)
			if _, held := rig.d.secrets.get(""); held || len(rig.d.secrets.m) != 0 {
				t.Errorf("secrets held after a refusal: %d", len(rig.d.secrets.m))
			}
		})
	}
}

// A secret's value reaches the container's environment and nothing else:
// not the record, the log, the events, the bbolt file, any file under the
// data dir, gantryd's own log; once the container exists gantryd forgets it.
func TestSecretsWrittenNowhere(t *testing.T) {
	const value = "s3cr3t-value-4f1d9a"
	var daemonLog bytes.Buffer
	f := pipeNewFakes(t)
	rig := pipeNewRig(t, 1, f, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&daemonLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	pipeRun(t, rig.d)
	spec := gantry.Spec{Run: gantry.RunSpec{Env: []string{"EPOCHS=3"}, SecretEnv: []string{"TOKEN"}}}
	j, err := rig.d.Submit(context.Background(), spec, map[string]string{"TOKEN": value}, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if j = pipeWait(t, rig.d, j.ID); j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s), want succeeded", j.State, j.Error)
	}
	specs := f.engine.specs()
	if len(specs) != 1 || !slices.Contains(specs[0].Env, "TOKEN="+value) || !slices.Contains(specs[0].Env, "EPOCHS=3") {
		t.Fatalf("container env: %v; want EPOCHS=3 and TOKEN's value", specs)
	}
	if !slices.Equal(j.Spec.Run.SecretEnv, []string{"TOKEN"}) {
		t.Errorf("the record names %v, want TOKEN", j.Spec.Run.SecretEnv)
	}
	if _, held := rig.d.secrets.get(j.ID); held {
		t.Errorf("gantryd still holds the job's secrets after its container was created")
	}
	rig.st.Close() // the bbolt file as it stands on disk
	files := 0
	filepath.WalkDir(rig.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		if b, err := os.ReadFile(p); err != nil || bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the secret's value (%v)", p, err)
		}
		return nil
	})
	if files < 2 {
		t.Errorf("looked at %d files under the data dir, want the bbolt file and the job's log at least", files)
	}
	if strings.Contains(daemonLog.String(), value) || !strings.Contains(daemonLog.String(), j.ID) {
		t.Errorf("gantryd's log holds the value, or nothing of the job:\n%s", daemonLog.String())
	}
}

// A job whose secrets died with the gantryd it was submitted to fails, with
// a reason that says so, before anything is built or run.
func TestSecretsLostAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	st := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
	defer st.Close()
	spec := gantry.Spec{Run: gantry.RunSpec{SecretEnv: []string{"TOKEN"}}}
	d1 := pipeNewDaemon(t, dir, 1, st, pipeNewFakes(t)) // never runs
	j, err := d1.Submit(context.Background(), spec, map[string]string{"TOKEN": "v"}, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	f2 := pipeNewFakes(t)
	d2 := pipeNewDaemon(t, dir, 1, st, f2)
	pipeResume(t, d2)
	j = pipeWait(t, d2, j.ID)
	if j.State != gantry.StateFailed || j.Error != errSecretsLost.Error() {
		t.Errorf("job %s: %q; want failed: %q", j.State, j.Error, errSecretsLost)
	}
	if built, _ := f2.builder.built(); len(built) != 0 || len(f2.engine.specs()) != 0 {
		t.Errorf("built %d, created %d containers; want neither", len(built), len(f2.engine.specs()))
	}
}

// datasetRig is a daemon whose policy allows the datasets under a root it
// names through a symlink; the root holds a dataset, a symlink to it, and a
// symlink out of the root.
type datasetRig struct {
	*pipeRig
	root    string // the real root
	given   string // the root as the operator wrote it: a symlink
	outside string
}

func newDatasetRig(t *testing.T, f pipeFakes) *datasetRig {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "real-root")
	outside := filepath.Join(base, "outside")
	for p, content := range map[string]string{
		"real-root/iris/train.csv":  "5.1,3.5,1.4,0.2,setosa\n",
		"real-root/iris/test/a.csv": "6.2,2.9,4.3,1.3,versicolor\n",
		"outside/secret/key":        "host secret\n",
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(base, p)), 0o755)
		pipeWriteFile(t, filepath.Join(base, p), content)
	}
	given := filepath.Join(base, "data")
	for link, target := range map[string]string{
		given:                              root,
		filepath.Join(root, "iris-latest"): "iris",
		filepath.Join(root, "escape"):      filepath.Join(outside, "secret"),
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	rig := pipeNewRig(t, 1, f, func(c *Config) { c.Policy.DatasetRoots = []string{given} })
	return &datasetRig{pipeRig: rig, root: root, given: given, outside: outside}
}

func datasetSpec(src string) gantry.Spec {
	return gantry.Spec{Run: gantry.RunSpec{Datasets: []gantry.Dataset{{Source: src, Target: "/data"}}}}
}

// A dataset is mounted only from under a --dataset-root, as its real path:
// one outside every root, through '..' or a symlink out of a root, is
// refused at submit naming the flag and the roots; a missing source or
// volume is refused too; and nothing of a refusal is kept.
func TestSubmitChecksDatasets(t *testing.T) {
	f := pipeNewFakes(t)
	f.engine.volume = func(ctx context.Context, name string) (runner.Volume, error) {
		if name == "iris-vol" {
			return runner.Volume{Name: name}, nil
		}
		return runner.Volume{}, gantry.Errorf(gantry.ErrNotFound, "no such volume %s", name)
	}
	rig := newDatasetRig(t, f)
	if got := rig.d.Policy().DatasetRoots; !slices.Equal(got, []string{rig.root}) {
		t.Errorf("policy roots %v, want the real root %s", got, rig.root)
	}
	for _, tc := range []struct {
		name, src string
		kind      error
		want      string // in the error; for an accepted one, the source recorded
	}{
		{"inside the root as written", rig.given + "/iris", nil, rig.root + "/iris"},
		{"inside the root, real path", rig.root + "/iris/train.csv", nil, rig.root + "/iris/train.csv"},
		{"a symlink within the root", rig.given + "/iris-latest", nil, rig.root + "/iris"},
		{"the root itself", rig.given, nil, rig.root},
		{"a volume", "iris-vol", nil, "iris-vol"},
		{"outside every root", rig.outside + "/secret", gantry.ErrForbidden, "--dataset-root: " + rig.root},
		{"the host's /etc", "/etc", gantry.ErrForbidden, "--dataset-root"},
		{"dot-dot out of the root", rig.given + "/../outside/secret", gantry.ErrInvalid, "'..'"},
		{"a symlink out of the root", rig.given + "/escape", gantry.ErrForbidden, "leads through a symlink to " + rig.outside + "/secret"},
		{"a missing source", rig.given + "/nothing", gantry.ErrInvalid, "no such file or directory"},
		{"a missing volume", "no-such-vol", gantry.ErrInvalid, "no such volume no-such-vol: create it with docker volume create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := rig.d.Submit(context.Background(), datasetSpec(tc.src), nil, pipeTar(t, pipeContext()))
			if tc.kind == nil {
				if err != nil {
					t.Fatalf("Submit: %v", err)
				}
				if got := j.Spec.Run.Datasets[0].Source; got != tc.want {
					t.Errorf("recorded source %s, want %s", got, tc.want)
				}
				rig.d.Cancel(context.Background(), j.ID)
				return
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Submit: %v; want %v saying %q", err, tc.kind, tc.want)
			}
		})
	}
	jobs, _, _ := rig.d.List(context.Background(), gantry.JobFilter{})
	if len(jobs) != 5 {
		t.Errorf("%d jobs recorded, want the 5 accepted ones only", len(jobs))
	}
}

// Without --dataset-root, a host path is refused naming the flag; a volume
// is still allowed.
func TestDatasetsWithoutARoot(t *testing.T) {
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	_, err := rig.d.Submit(context.Background(), datasetSpec(t.TempDir()), nil, pipeTar(t, pipeContext()))
	if !errors.Is(err, gantry.ErrForbidden) || !strings.Contains(err.Error(), "--dataset-root") {
		t.Fatalf("Submit: %v; want ErrForbidden naming --dataset-root", err)
	}
	assertNothingKept(t, rig)
	if _, err := rig.d.Submit(context.Background(), datasetSpec("vol"), nil, pipeTar(t, pipeContext())); err != nil {
		t.Errorf("Submit of a volume: %v", err)
	}
}

// gantryd refuses to start with a --dataset-root that is missing, not a
// directory, or leads to /.
func TestDatasetRootsCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	pipeWriteFile(t, file, "x")
	slash := filepath.Join(dir, "slash")
	os.Symlink("/", slash)
	for _, root := range []string{filepath.Join(dir, "missing"), file, slash} {
		st := pipeOpenStore(t, filepath.Join(t.TempDir(), "gantry.db"))
		f := pipeNewFakes(t)
		cfg := Config{DataDir: t.TempDir(), MaxJobs: 1, Policy: gantry.Policy{DatasetRoots: []string{root}}}
		_, err := New(cfg, st, f.builder, f.engine, f.pusher, f.source.read)
		st.Close()
		if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), "--dataset-root "+root) {
			t.Errorf("New with root %s: %v; want ErrInvalid naming it", root, err)
		}
	}
}

// Before its container is created, a job pins each dataset by the digest
// of its tree, and mounts it read-only by its real path; the next job on
// the same data reads no file again. A volume gantryd can read is pinned
// too; one it cannot says why.
func TestDatasetsPinned(t *testing.T) {
	f := pipeNewFakes(t)
	volDir := t.TempDir()
	pipeWriteFile(t, filepath.Join(volDir, "v.csv"), "1,2\n")
	f.engine.volume = func(ctx context.Context, name string) (runner.Volume, error) {
		if name == "readable" {
			return runner.Volume{Name: name, Mountpoint: volDir}, nil
		}
		return runner.Volume{Name: name}, nil
	}
	rig := newDatasetRig(t, f)
	pipeRun(t, rig.d)
	spec := gantry.Spec{Run: gantry.RunSpec{Datasets: []gantry.Dataset{
		{Source: rig.given + "/iris-latest", Target: "/data"},
		{Source: "readable", Target: "/vol"},
		{Source: "remote", Target: "/remote"},
	}}}
	want, err := treesum.Tree(context.Background(), filepath.Join(rig.root, "iris"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, wantRead := range []string{"2 files read", "0 files read"} {
		j := pipeWait(t, rig.d, pipeSubmit(t, rig.d, spec).ID)
		if j.State != gantry.StateSucceeded {
			t.Fatalf("job %d: %s (%s)", i, j.State, j.Error)
		}
		pins := j.Inputs.Datasets
		if len(pins) != 3 || pins[0].Digest != want.Digest || pins[0].Files != 2 || pins[0].Source != rig.root+"/iris" {
			t.Fatalf("job %d: pins %+v; want the iris tree, %s, by its real path", i, pins, want.Digest)
		}
		if pins[1].Digest == "" || pins[2].Digest != "" || !strings.Contains(pins[2].Note, "not on gantryd's host") {
			t.Errorf("job %d: volume pins %+v; want the readable one summed, the other with a note", i, pins[1:])
		}
		if j.Provenance == nil || !slices.Equal(j.Provenance.Inputs.Datasets, pins) {
			t.Errorf("job %d: provenance does not pin the datasets", i)
		}
		if log := pipeReadLog(t, rig.d, j.ID); !strings.Contains(log, "dataset "+rig.root+"/iris:/data pinned: "+want.Digest+" (2 files, 50b; "+wantRead) {
			t.Errorf("job %d: the log does not say %q:\n%s", i, wantRead, log)
		}
		ms := f.engine.specs()[i].Mounts
		if len(ms) != 3 || ms[0] != (runner.Mount{Source: rig.root + "/iris", Target: "/data"}) || ms[1] != (runner.Mount{Source: "readable", Target: "/vol", Volume: true}) {
			t.Errorf("job %d: mounts %+v; want the real path and the volumes", i, ms)
		}
	}
}

// A host path that, after submit, came to lead out of its root fails the
// job before its container is created.
func TestDatasetChangedAfterSubmit(t *testing.T) {
	f := pipeNewFakes(t)
	rig := newDatasetRig(t, f)
	j := pipeSubmit(t, rig.d, datasetSpec(rig.given+"/iris"))
	iris := filepath.Join(rig.root, "iris")
	if err := os.Rename(iris, iris+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rig.outside, iris); err != nil {
		t.Fatal(err)
	}
	pipeRun(t, rig.d)
	j = pipeWait(t, rig.d, j.ID)
	if j.State != gantry.StateFailed || !strings.Contains(j.Error, "leads through a symlink to "+rig.outside) || len(f.engine.specs()) != 0 {
		t.Errorf("job %s (%s), %d containers; want failed before any container, saying where it leads", j.State, j.Error, len(f.engine.specs()))
	}
}
