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
)

// The build secrets' values must be exactly those the spec's IDs name, and
// within the bounds: anything else is refused at submit, and nothing kept.
func TestSubmitRefusesBuildSecretsNotMatchingTheSpec(t *testing.T) {
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	big := bytes.Repeat([]byte("x"), gantry.MaxBuildSecretBytes+1)
	for _, tc := range []struct {
		name string
		ids  []string
		vals map[string][]byte
		kind error
	}{
		{"missing", []string{"token"}, nil, gantry.ErrInvalid},
		{"extra", nil, map[string][]byte{"token": []byte("v")}, gantry.ErrInvalid},
		{"other", []string{"token"}, map[string][]byte{"pip": []byte("v")}, gantry.ErrInvalid},
		{"too large", []string{"token"}, map[string][]byte{"token": big}, gantry.ErrTooLarge},
		{"bad id", []string{"a/b"}, map[string][]byte{"a/b": []byte("v")}, gantry.ErrInvalid},
	} {
		spec := gantry.Spec{Build: gantry.BuildSpec{Secrets: tc.ids}}
		ctx := gantry.WithBuildSecrets(context.Background(), tc.vals)
		_, err := rig.d.Submit(ctx, spec, nil, pipeTar(t, pipeContext()))
		if !errors.Is(err, tc.kind) {
			t.Errorf("%s: Submit: %v, want %v", tc.name, err, tc.kind)
		}
	}
	if jobs, _, _ := rig.d.List(context.Background(), gantry.JobFilter{}); len(jobs) != 0 || len(rig.d.buildSecrets.m) != 0 {
		t.Errorf("refused submissions left %d jobs, %d held secrets", len(jobs), len(rig.d.buildSecrets.m))
	}
}

// The build gets the values; once it has used them gantryd forgets them;
// the record and the provenance name the IDs only, and the data dir and
// gantryd's log hold the value nowhere.
func TestBuildSecretsReachTheBuildOnly(t *testing.T) {
	const value = "build-s3cr3t-9b27e1"
	var daemonLog bytes.Buffer
	f := pipeNewFakes(t)
	rig := pipeNewRig(t, 1, f, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&daemonLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	pipeRun(t, rig.d)
	spec := gantry.Spec{Build: gantry.BuildSpec{Secrets: []string{"token"}, BuildArgs: map[string]string{"V": "1"}, Provenance: gantry.ProvenanceMin}}
	ctx := gantry.WithBuildSecrets(context.Background(), map[string][]byte{"token": []byte(value)})
	j, err := rig.d.Submit(ctx, spec, nil, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if j = pipeWait(t, rig.d, j.ID); j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s), want succeeded", j.State, j.Error)
	}
	reqs, _ := f.builder.built()
	if len(reqs) != 1 || string(reqs[0].Secrets["token"]) != value || len(reqs[0].Secrets) != 1 {
		t.Fatalf("build requests %d, secrets %d; want one with token's value", len(reqs), len(reqs[0].Secrets))
	}
	if _, held := rig.d.buildSecrets.get(j.ID); held {
		t.Errorf("gantryd still holds the build secrets after the build")
	}
	if p := j.Provenance; p == nil || !slices.Equal(p.BuildSecrets, []string{"token"}) || p.BuildArgs != nil || !slices.Equal(p.BuildArgNames, []string{"V"}) {
		t.Errorf("provenance %+v; want build secret token, build arg names [V] and no values", p)
	}
	rig.st.Close()
	filepath.WalkDir(rig.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if b, err := os.ReadFile(p); err != nil || bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the secret's value (%v)", p, err)
		}
		return nil
	})
	if strings.Contains(daemonLog.String(), value) {
		t.Errorf("gantryd's log holds the value")
	}
}

// A job whose build secrets died with the gantryd it was submitted to
// fails, saying so, before anything is built.
func TestBuildSecretsLostAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	st := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
	defer st.Close()
	spec := gantry.Spec{Build: gantry.BuildSpec{Secrets: []string{"token"}}}
	d1 := pipeNewDaemon(t, dir, 1, st, pipeNewFakes(t)) // never runs
	ctx := gantry.WithBuildSecrets(context.Background(), map[string][]byte{"token": []byte("v")})
	j, err := d1.Submit(ctx, spec, nil, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	f2 := pipeNewFakes(t)
	d2 := pipeNewDaemon(t, dir, 1, st, f2)
	pipeResume(t, d2)
	j = pipeWait(t, d2, j.ID)
	if j.State != gantry.StateFailed || j.Error != errBuildSecretsLost.Error() {
		t.Errorf("job %s: %q; want failed: %q", j.State, j.Error, errBuildSecretsLost)
	}
	if built, _ := f2.builder.built(); len(built) != 0 {
		t.Errorf("built %d times; want never", len(built))
	}
}

// A sweep's one build gets the secrets, held under the sweep until then.
func TestSweepBuildsOnceWithItsSecrets(t *testing.T) {
	f := pipeNewFakes(t)
	sweepTrain(f)
	rig := pipeNewRig(t, 2, f)
	pipeRun(t, rig.d)
	spec := gantry.SweepSpec{Job: gantry.Spec{Build: gantry.BuildSpec{Secrets: []string{"token"}}}, Params: sweepGrid}
	ctx := gantry.WithBuildSecrets(context.Background(), map[string][]byte{"token": []byte("v")})
	sw, err := rig.d.SubmitSweep(ctx, spec, nil, pipeTar(t, pipeContext()))
	if err != nil {
		t.Fatalf("SubmitSweep: %v", err)
	}
	if v := sweepWait(t, rig.d, sw.ID); v.Sweep.State != gantry.StateSucceeded {
		t.Fatalf("sweep %s (%s), want succeeded", v.Sweep.State, v.Sweep.Error)
	}
	reqs, _ := f.builder.built()
	if len(reqs) != 1 || string(reqs[0].Secrets["token"]) != "v" {
		t.Errorf("%d builds; want one, given the secret", len(reqs))
	}
	if _, held := rig.d.buildSecrets.get(sw.ID); held {
		t.Errorf("gantryd still holds the sweep's build secrets")
	}
}
