package swarm

// These tests run against a real Docker Swarm of three dockerd (internal/lab),
// one lab shared by the package's tests: node 1 advertises gpu=2, node 2 has
// the label pool=train.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/lab"
	"github.com/gantry-ml/gantry/runner"
)

const baseImage = "gantry/python-ml:bookworm"

// theLab is the swarm every test uses; nil under -short or without root.
var theLab *lab.Swarm

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	began := time.Now()
	s, err := lab.StartSwarm(ctx, lab.SwarmOptions{
		GPUNode:   1,
		Labels:    map[int]map[string]string{2: {"pool": "train"}},
		Images:    []string{baseImage},
		Heartbeat: time.Second,
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the swarm lab:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "swarm lab up in %s\n", time.Since(began).Round(time.Millisecond))
	theLab = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close the swarm lab:", err)
	}
	os.Exit(code)
}

// backend dials the lab's manager.
func backend(t *testing.T) *Backend {
	t.Helper()
	if theLab == nil {
		t.Skip("needs the swarm lab (root, not -short)")
	}
	b, err := Dial(context.Background(), Options{Host: theLab.Manager().Host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func random() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pySpec is a run of python code on the lab's base image, labelled with a
// fresh job ID.
func pySpec(code string) runner.Spec {
	job := random()
	return runner.Spec{
		Image:  theLab.Image(baseImage),
		Name:   "gantry-test-" + job,
		Labels: map[string]string{runner.LabelJob: job, runner.LabelDaemon: "swarm-test"},
		Cmd:    []string{"python3", "-c", code},
		Env:    []string{gantry.OutputDirEnv + "=/output", "PYTHONUNBUFFERED=1"},
	}
}

// create creates s, and removes it when the test ends.
func create(t *testing.T, b *Backend, s runner.Spec) string {
	t.Helper()
	id, err := b.Create(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Remove(context.Background(), id); err != nil {
			t.Errorf("remove: %v", err)
		}
	})
	return id
}

// placements records what Run's watch is told.
type placements struct {
	mu   sync.Mutex
	seen []gantry.Placement
	// on, when set, is called with each placement.
	on func(gantry.Placement)
}

func (p *placements) watch(pl gantry.Placement) {
	p.mu.Lock()
	p.seen = append(p.seen, pl)
	on := p.on
	p.mu.Unlock()
	if on != nil {
		on(pl)
	}
}

func (p *placements) nodeID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pl := range p.seen {
		if pl.NodeID != "" {
			return pl.NodeID
		}
	}
	return ""
}

// run runs id to its end within a generous limit.
func run(t *testing.T, b *Backend, id string) (runner.Exit, string, *placements) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	p := &placements{}
	exit, err := b.Run(ctx, id, &out, p.watch)
	if err != nil {
		t.Fatalf("run: %v (output so far: %q)", err, out.String())
	}
	return exit, out.String(), p
}

func TestDial(t *testing.T) {
	backend(t)
	_, err := Dial(context.Background(), Options{Host: theLab.Nodes[1].Host})
	if !errors.Is(err, gantry.ErrInvalid) || !strings.Contains(err.Error(), "docker swarm init") {
		t.Errorf("Dial of a worker: got %v, want ErrInvalid saying docker swarm init", err)
	}
	_, err = Dial(context.Background(), Options{Host: "unix://" + t.TempDir() + "/none.sock"})
	if !errors.Is(err, gantry.ErrUnavailable) {
		t.Errorf("Dial of nothing: got %v, want ErrUnavailable", err)
	}
}

// TestExitAndLogs: every line once, the exit code, a replay by a second
// Backend (gantryd restarted), State, no outputs, and a refused second Create.
func TestExitAndLogs(t *testing.T) {
	b := backend(t)
	s := pySpec(`import sys
for i in range(300):
    print("out", i)
    if i % 50 == 0:
        print("err", i, file=sys.stderr)
sys.exit(3)`)
	id := create(t, b, s)
	if _, err := b.Create(context.Background(), s); !errors.Is(err, gantry.ErrConflict) {
		t.Errorf("second Create: got %v, want ErrConflict", err)
	}
	exit, out, p := run(t, b, id)
	if exit.Code != 3 || exit.Lost != "" || exit.OOMProbable {
		t.Errorf("exit: got %+v, want code 3", exit)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	count := map[string]int{}
	for _, l := range lines {
		count[l]++
	}
	for i := 0; i < 300; i++ {
		if n := count[fmt.Sprint("out ", i)]; n != 1 {
			t.Errorf("line %q: %d times, want once", fmt.Sprint("out ", i), n)
		}
		if n := count[fmt.Sprint("err ", i)]; i%50 == 0 && n != 1 {
			t.Errorf("line %q: %d times, want once", fmt.Sprint("err ", i), n)
		}
	}
	if len(lines) != 306 {
		t.Errorf("got %d lines, want 306", len(lines))
	}
	if p.nodeID() == "" {
		t.Errorf("watch never told a node: %+v", p.seen)
	}

	// A second gantryd's Backend replays the log from the start.
	b2 := backend(t)
	exit2, out2, _ := run(t, b2, id)
	if exit2 != exit || out2 != out {
		t.Errorf("replay: got %+v and %d bytes, want %+v and the same %d bytes", exit2, len(out2), exit, len(out))
	}
	st, err := b2.State(context.Background(), id)
	if err != nil || st.Running || st.ExitCode != 3 || st.FinishedAt.IsZero() {
		t.Errorf("State: got %+v, %v; want ended with 3", st, err)
	}
	if _, err := b.CopyFrom(context.Background(), id, "/output"); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("CopyFrom of no outputs: got %v, want ErrNotFound", err)
	}
	if err := b.Remove(context.Background(), s.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := b.State(context.Background(), id); !errors.Is(err, gantry.ErrNotFound) {
		t.Errorf("State after Remove: got %v, want ErrNotFound", err)
	}
}

// TestRegistryAuth: the credentials go with the service (the nodes pull
// with them) and the manager does not show them back, neither in the
// service nor in its task.
func TestRegistryAuth(t *testing.T) {
	backend(t)
	secret := base64.StdEncoding.EncodeToString([]byte(`{"username":"gantry","password":"not-shown-` + random() + `"}`))
	var asked []string
	b, err := Dial(context.Background(), Options{Host: theLab.Manager().Host, RegistryAuth: func(image string) (string, error) {
		asked = append(asked, image)
		return secret, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := pySpec(`print("pulled")`)
	id := create(t, b, s)
	if len(asked) != 1 || asked[0] != s.Image {
		t.Errorf("RegistryAuth asked for %v, want [%s]", asked, s.Image)
	}
	if exit, out, _ := run(t, b, id); exit.Code != 0 || out != "pulled\n" {
		t.Errorf("run: %+v, %q", exit, out)
	}
	svc, err := b.c.ServiceInspect(context.Background(), id, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	task, _, err := b.task(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := b.c.TaskInspect(context.Background(), task.ID, client.TaskInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for what, raw := range map[string][]byte{"service": svc.Raw, "task": ti.Raw} {
		if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte("not-shown-")) {
			t.Errorf("the %s's inspect shows the credentials: %s", what, raw)
		}
	}
}
