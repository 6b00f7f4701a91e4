package gantry

import (
	"strings"
	"testing"
)

// TestPolicyBackend checks what each backend refuses at submit.
func TestPolicyBackend(t *testing.T) {
	tests := []struct {
		name    string
		backend string
		run     RunSpec
		want    string // "" accepted
	}{
		{name: "local, nothing asked", backend: BackendLocal},
		{name: "local, a constraint", backend: BackendLocal, run: RunSpec{Constraints: []string{"node.labels.pool==train"}}, want: "--backend swarm"},
		{name: "default backend, a constraint", run: RunSpec{Constraints: []string{"node.role==worker"}}, want: "--backend swarm"},
		{name: "swarm, a constraint", backend: BackendSwarm, run: RunSpec{Constraints: []string{"node.labels.pool==train"}}},
		{name: "swarm, a GPU count", backend: BackendSwarm, run: RunSpec{GPUs: "2"}},
		{name: "swarm, all GPUs", backend: BackendSwarm, run: RunSpec{GPUs: "all"}, want: "ask for a number of GPUs"},
		{name: "swarm, a GPU device", backend: BackendSwarm, run: RunSpec{GPUs: "device=0"}, want: "ask for a number of GPUs"},
		{name: "swarm, a dataset", backend: BackendSwarm, run: RunSpec{Datasets: []Dataset{{Source: "iris", Target: "/data"}}}, want: "mounts no datasets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Policy{Backend: tc.backend, GPUs: true}
			spec := Spec{Run: tc.run}
			err := p.Apply(&spec)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestRunSpecPlacement checks the constraints' and retries' validation.
func TestRunSpecPlacement(t *testing.T) {
	for _, tc := range []struct {
		run  RunSpec
		want string
	}{
		{run: RunSpec{Constraints: []string{"node.labels.pool==train", "node.role != manager", "engine.labels.gpu==yes"}}},
		{run: RunSpec{Constraints: []string{"pool==train"}}, want: "constraint"},
		{run: RunSpec{Constraints: []string{"node.labels.pool=train"}}, want: "constraint"},
		{run: RunSpec{Constraints: []string{"node.labels.pool==a b"}}, want: "constraint"},
		{run: RunSpec{Retries: 3}},
		{run: RunSpec{Retries: -1}, want: "retries"},
		{run: RunSpec{Retries: MaxRetries + 1}, want: "retries"},
	} {
		spec := Spec{Run: tc.run}
		err := spec.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: got %v, want %q", tc.run, err, tc.want)
		}
	}
}
