package main

import (
	"bytes"
	"testing"

	"github.com/gantry-ml/gantry"
)

// gantry diff shows how the training was given differently: a
// hyperparameter in the command or the environment, a secret by name, a
// dataset by its pinned digest.
func TestDiffRun(t *testing.T) {
	a := &gantry.Job{ID: "a", Spec: gantry.Spec{Run: gantry.RunSpec{
		Env:      []string{"EPOCHS=10", "SEED=1"},
		Datasets: []gantry.Dataset{{Source: "/srv/iris", Target: "/data"}},
	}}, Inputs: gantry.Inputs{Datasets: []gantry.DatasetPin{{Dataset: gantry.Dataset{Source: "/srv/iris", Target: "/data"}, Digest: "sha256:aaaaaaaaaaaaaaaaaaaa"}}}}
	b := &gantry.Job{ID: "b", Spec: gantry.Spec{Run: gantry.RunSpec{
		Cmd:       []string{"python3", "train.py", "--lr", "0.1"},
		Env:       []string{"EPOCHS=20", "LR=0.1"},
		SecretEnv: []string{"TOKEN"},
		Datasets:  []gantry.Dataset{{Source: "/srv/iris", Target: "/data"}},
		ShmSize:   1 << 30,
	}}, Inputs: gantry.Inputs{Datasets: []gantry.DatasetPin{{Dataset: gantry.Dataset{Source: "/srv/iris", Target: "/data"}, Digest: "sha256:bbbbbbbbbbbbbbbbbbbb"}}}}
	var out bytes.Buffer
	diffJobs(&out, a, b, func(s string) string { return s })
	want := "--- a\n+++ b\n" +
		`command: (the image's) -> ["python3" "train.py" "--lr" "0.1"]` + "\n" +
		"env: ~ EPOCHS: 10 -> 20\n" +
		"env: + LR=0.1\n" +
		"env: - SEED=1\n" +
		"secret env: (none) -> TOKEN\n" +
		"dataset /data: /srv/iris sha256:aaaaaaaaaaaa -> /srv/iris sha256:bbbbbbbbbbbb\n" +
		"shm size: (the engine's) -> 1g\n"
	if out.String() != want {
		t.Errorf("diff\n got %q\nwant %q", out.String(), want)
	}
}
