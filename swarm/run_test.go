package swarm

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
)

// TestOutputs: files the training writes to $GANTRY_OUTPUT_DIR come back as
// docker cp's tar, twice (the collector keeps them), and Remove takes the
// collector away.
func TestOutputs(t *testing.T) {
	b := backend(t)
	s := pySpec(`import os
d = os.environ["GANTRY_OUTPUT_DIR"]
os.makedirs(d + "/sub", exist_ok=True)
open(d + "/model.txt", "w").write("weights\n")
open(d + "/sub/data.bin", "wb").write(bytes(range(256)) * 1000)`)
	id := create(t, b, s)
	if exit, _, _ := run(t, b, id); exit.Code != 0 {
		t.Fatalf("exit: %+v", exit)
	}
	want := map[string]string{
		"output/":             "",
		"output/model.txt":    "weights\n",
		"output/sub/":         "",
		"output/sub/data.bin": strings.Repeat(string(bytesUpTo256()), 1000),
	}
	for round := 1; round <= 2; round++ {
		got := copyFrom(t, b, id, "/output")
		if len(got) != len(want) {
			t.Errorf("round %d: got entries %v, want %d", round, keys(got), len(want))
		}
		for name, content := range want {
			if c, ok := got[name]; !ok || c != content {
				t.Errorf("round %d: entry %s: got %d bytes (present %v), want %d", round, name, len(c), ok, len(content))
			}
		}
	}
	if _, err := b.CopyFrom(context.Background(), id, "/etc"); err == nil || errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("CopyFrom of another path: got %v, want an error other than ErrNotFound", err)
	}
	cs, err := b.Containers(context.Background(), map[string]string{labelCollects: id})
	if err != nil || len(cs) != 1 {
		t.Fatalf("collectors: got %v, %v; want one", cs, err)
	}
	if err := b.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if cs, err := b.Containers(context.Background(), map[string]string{labelCollects: id}); err != nil || len(cs) != 0 {
		t.Errorf("collectors after Remove: got %v, %v; want none", cs, err)
	}
}

func bytesUpTo256() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// copyFrom reads CopyFrom's tar into name: content (directories end in /).
func copyFrom(t *testing.T, b *Backend, id, path string) map[string]string {
	t.Helper()
	rc, err := b.CopyFrom(context.Background(), id, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = string(data)
	}
}

// TestOOMProbable: over a memory limit, exit 137 is probably out of memory.
func TestOOMProbable(t *testing.T) {
	b := backend(t)
	s := pySpec(`x = bytearray(200 * 1024 * 1024)
for i in range(0, len(x), 4096):
    x[i] = 1
print("survived")`)
	s.Memory = 32 << 20
	id := create(t, b, s)
	exit, out, _ := run(t, b, id)
	if exit.Code != 137 || !exit.OOMProbable {
		t.Errorf("exit: got %+v, want 137 and OOMProbable (output %q)", exit, out)
	}
}

// TestPlacement: GPUs and constraints put the task on the right node, and a
// request no node can meet waits, saying why.
func TestPlacement(t *testing.T) {
	b := backend(t)
	gpu := pySpec(`import os; print(os.environ.get("DOCKER_RESOURCE_GPU"))`)
	gpu.GPUs = gantry.GPURequest{Count: 1}
	_, out, p := run(t, b, create(t, b, gpu))
	if got, want := p.nodeID(), theLab.Nodes[1].ID; got != want {
		t.Errorf("gpu 1: ran on node %s, want the GPU node %s", got, want)
	}
	if strings.TrimSpace(out) == "None" {
		t.Errorf("gpu 1: DOCKER_RESOURCE_GPU not set")
	}

	pool := pySpec(`print("hi")`)
	pool.Constraints = []string{"node.labels.pool==train"}
	if _, _, p := run(t, b, create(t, b, pool)); p.nodeID() != theLab.Nodes[2].ID {
		t.Errorf("pool==train: ran on node %s, want %s", p.nodeID(), theLab.Nodes[2].ID)
	}

	big := pySpec(`print("never")`)
	big.GPUs = gantry.GPURequest{Count: 5}
	id := create(t, b, big)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waiting := make(chan string, 1)
	pl := &placements{on: func(p gantry.Placement) {
		if strings.Contains(p.Waiting, "insufficient resources") {
			select {
			case waiting <- p.Waiting:
			default:
			}
			cancel()
		}
	}}
	_, err := b.Run(ctx, id, io.Discard, pl.watch)
	select {
	case w := <-waiting:
		t.Logf("gpu 5 waits: %s", w)
	default:
		t.Errorf("gpu 5: got %v and placements %+v, want a wait for insufficient resources", err, pl.seen)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run after its ctx ended: got %v, want context.Canceled", err)
	}
	if err := b.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// TestStop: Stop ends a sleeping task (PID 1 ignores SIGTERM: it is killed
// after the grace), and Run returns its exit.
func TestStop(t *testing.T) {
	b := backend(t)
	s := pySpec(`import time
print("sleeping", flush=True)
time.sleep(600)`)
	s.StopGrace = 2 * time.Second
	s.Memory = 256 << 20 // a kill under a limit that Stop made is no OOM
	id := create(t, b, s)
	done := runUntil(t, b, id, "sleeping")
	if st, err := b.State(context.Background(), id); err != nil || !st.Running {
		t.Errorf("State while sleeping: %+v, %v", st, err)
	}
	if err := b.Stop(context.Background(), id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	exit := <-done
	if exit.Code == 0 || exit.Lost != "" || exit.OOMProbable {
		t.Errorf("exit after Stop: %+v, want a kill, not out of memory", exit)
	}
	if st, err := b.State(context.Background(), id); err != nil || st.Running {
		t.Errorf("State after Stop: %+v, %v", st, err)
	}
	if err := b.Stop(context.Background(), "gantry-test-none", time.Second); err != nil {
		t.Errorf("Stop of nothing: %v", err)
	}
}

// signalWriter closes seen once want was written to it (or fail is called).
type signalWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	done bool
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *signalWriter) fail() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.done = true
		close(w.seen)
	}
}

// TestContainers lists a run by its labels, and Nodes every node.
func TestContainers(t *testing.T) {
	b := backend(t)
	s := pySpec(`print(1)`)
	id := create(t, b, s)
	cs, err := b.Containers(context.Background(), map[string]string{runner.LabelJob: s.Labels[runner.LabelJob], runner.LabelDaemon: "swarm-test"})
	if err != nil || len(cs) != 1 || cs[0].ID != id || cs[0].Created.IsZero() {
		t.Errorf("Containers: got %+v, %v; want the one run", cs, err)
	}
	nodes, err := b.Nodes(context.Background())
	if err != nil || len(nodes) != 3 {
		t.Fatalf("Nodes: %+v, %v", nodes, err)
	}
	for _, n := range nodes {
		if n.ID == theLab.Nodes[1].ID && n.Generic["gpu"] != 2 {
			t.Errorf("GPU node: generic %v, want gpu=2", n.Generic)
		}
		if n.ID == theLab.Nodes[2].ID && n.Labels["pool"] != "train" {
			t.Errorf("node 2: labels %v, want pool=train", n.Labels)
		}
		if n.State != "ready" || n.CPUs <= 0 || n.Memory <= 0 {
			t.Errorf("node %s: %+v", n.Hostname, n)
		}
	}
}

// TestLost: a worker cut off mid-run is marked down, and Run says the run
// was lost.
func TestLost(t *testing.T) {
	b := backend(t)
	s := pySpec(`import time
print("running", flush=True)
time.sleep(600)`)
	s.Constraints = []string{"node.id==" + theLab.Nodes[2].ID}
	id := create(t, b, s)
	done := runUntil(t, b, id, "running")
	ctx := context.Background()
	began := time.Now()
	if err := theLab.Cut(ctx, 2); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := theLab.Heal(ctx, 2); err != nil {
			t.Error(err)
		}
		if err := theLab.WaitNodes(ctx, swarm.NodeStateReady, 3*time.Minute, 2); err != nil {
			t.Error(err)
		}
	}()
	select {
	case exit := <-done:
		t.Logf("lost after %s: %+v", time.Since(began).Round(time.Second), exit)
		if !strings.Contains(exit.Lost, "is down") || !strings.Contains(exit.Lost, theLab.Nodes[2].ID) {
			t.Errorf("exit: got %+v, want lost: node down", exit)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("Run did not return after the node was cut")
	}
}

// TestRejected: an image the nodes cannot pull is an error that says why,
// not a lost run.
func TestRejected(t *testing.T) {
	b := backend(t)
	s := pySpec(`print(1)`)
	s.Image = theLab.Registry + "/gantry/none:missing"
	id := create(t, b, s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	exit, err := b.Run(ctx, id, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Errorf("Run of a missing image: got %+v, %v; want the swarm's rejection", exit, err)
	}
	t.Logf("Run: %v", err)
}

// runUntil runs id in the background until its output holds want, and
// returns where its exit will come.
func runUntil(t *testing.T, b *Backend, id, want string) <-chan runner.Exit {
	t.Helper()
	out := &signalWriter{seen: make(chan struct{}), want: want}
	done := make(chan runner.Exit, 1)
	go func() {
		exit, err := b.Run(context.Background(), id, out, nil)
		if err != nil {
			t.Errorf("run: %v", err)
			out.fail()
		}
		done <- exit
	}()
	select {
	case <-out.seen:
	case <-time.After(5 * time.Minute):
		t.Fatal("the task never printed")
	}
	if t.Failed() {
		t.FailNow()
	}
	return done
}
