package main

import (
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

func TestWriteNodes(t *testing.T) {
	var b strings.Builder
	err := writeNodes(&b, gantry.Cluster{Backend: gantry.BackendSwarm, Nodes: []gantry.Node{
		{ID: "0123456789abcdef", Hostname: "m", Role: "manager", State: "ready", Availability: "active", CPUs: 2, Memory: 2 << 30},
		{ID: "n2", Hostname: "w2", Role: "worker", State: "down", Availability: "active", CPUs: 0.5,
			Generic: map[string]int64{"gpu": 2, "fpga": 1}, Labels: map[string]string{"pool": "train", "a": "b"}, Jobs: []string{"j1", "j2"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"backend: swarm",
		"NODE          HOSTNAME  ROLE     STATE  AVAILABILITY  CPUS  MEMORY   GENERIC     LABELS         JOBS",
		"0123456789ab  m         manager  ready  active        2     2.00 GB  -           -              -",
		"n2            w2        worker   down   active        0.5   0 B      fpga=1,gpu=2  a=b,pool=train  j1,j2",
	}
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), strings.Join(want, "\n"))
	}
	for i := range want {
		if strings.Join(strings.Fields(got[i]), " ") != strings.Join(strings.Fields(want[i]), " ") {
			t.Errorf("line %d: got %q, want %q", i, got[i], want[i])
		}
	}
}
