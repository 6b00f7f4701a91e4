package lab

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// testImage is the base image the host engine holds (scripts/services.sh).
const testImage = "gantry/python-ml:bookworm"

// TestSwarm starts a real 3-node swarm, runs a task on the labelled node,
// partitions that node and heals it, and checks that Close leaves nothing.
func TestSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three dockerd in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it creates network namespaces and runs dockerd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	began := time.Now()
	s, err := StartSwarm(ctx, SwarmOptions{
		GPUNode:   1,
		Labels:    map[int]map[string]string{2: {"pool": "train"}},
		Images:    []string{testImage},
		Heartbeat: time.Second,
		Log:       tlog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartSwarm took %s", time.Since(began).Round(time.Millisecond))
	defer s.Close()

	checkNodes(ctx, t, s)
	runOnLabelled(ctx, t, s)

	if err := s.Cut(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitNodes(ctx, swarm.NodeStateDown, 3*time.Minute, 2); err != nil {
		t.Fatalf("after Cut: %v", err)
	}
	if err := s.Heal(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitNodes(ctx, swarm.NodeStateReady, 3*time.Minute, 2); err != nil {
		t.Fatalf("after Heal: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checkNothingLeft(t, s.names)
}

func checkNodes(ctx context.Context, t *testing.T, s *Swarm) {
	t.Helper()
	list, err := s.Client(0).NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 3 {
		t.Fatalf("got %d nodes, want 3", len(list.Items))
	}
	for _, n := range list.Items {
		if n.Status.State != swarm.NodeStateReady {
			t.Errorf("node %s (%s) is %s, want ready", n.ID, n.Description.Hostname, n.Status.State)
		}
		isMgr := n.ID == s.Manager().ID
		if leader := n.ManagerStatus != nil && n.ManagerStatus.Leader; leader != isMgr {
			t.Errorf("node %s: leader %v, want %v", n.Description.Hostname, leader, isMgr)
		}
		gpus := int64(0)
		for _, r := range n.Description.Resources.GenericResources {
			if r.DiscreteResourceSpec != nil && r.DiscreteResourceSpec.Kind == "gpu" {
				gpus = r.DiscreteResourceSpec.Value
			}
		}
		want := int64(0)
		if n.ID == s.Nodes[1].ID {
			want = 2
		}
		if gpus != want {
			t.Errorf("node %s advertises gpu=%d, want %d", n.Description.Hostname, gpus, want)
		}
		if n.ID == s.Nodes[2].ID && n.Spec.Labels["pool"] != "train" {
			t.Errorf("node 2 labels %v, want pool=train", n.Spec.Labels)
		}
	}
}

// runOnLabelled runs a one-shot task constrained to pool==train and checks
// that node 2 ran it and that its logs hold what it printed.
func runOnLabelled(ctx context.Context, t *testing.T, s *Swarm) {
	t.Helper()
	mgr := s.Client(0)
	one := uint64(1)
	cond := swarm.RestartPolicyConditionNone
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "lab-test-print"},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:   s.Image(testImage),
				Command: []string{"python3", "-c", "print(42)"},
			},
			Placement:     &swarm.Placement{Constraints: []string{"node.labels.pool==train"}},
			RestartPolicy: &swarm.RestartPolicy{Condition: cond},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &one}},
	}
	created, err := mgr.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	task := waitTask(ctx, t, s, created.ID)
	if task.NodeID != s.Nodes[2].ID {
		t.Errorf("task ran on %s, want node 2 (%s)", task.NodeID, s.Nodes[2].ID)
	}
	if task.Status.State != swarm.TaskStateComplete {
		t.Fatalf("task ended %s: %s %s", task.Status.State, task.Status.Err, task.Status.Message)
	}
	logs, err := mgr.ServiceLogs(ctx, created.ID, client.ServiceLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	b, err := io.ReadAll(logs)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "42") {
		t.Errorf("service logs %q do not hold 42", b)
	}
	if _, err := mgr.ServiceRemove(ctx, created.ID, client.ServiceRemoveOptions{}); err != nil {
		t.Error(err)
	}
}

// waitTask polls the service's task until it has ended (the engine offers
// no event for a task's state).
func waitTask(ctx context.Context, t *testing.T, s *Swarm, service string) swarm.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	f := client.Filters{}.Add("service", service)
	for {
		list, err := s.Client(0).TaskList(ctx, client.TaskListOptions{Filters: f})
		if err == nil && len(list.Items) > 0 {
			task := list.Items[0]
			switch task.Status.State {
			case swarm.TaskStateComplete, swarm.TaskStateFailed, swarm.TaskStateRejected, swarm.TaskStateShutdown:
				return task
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task of service %s did not end: %v", service, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkNothingLeft checks that a closed lab left nothing of its own run
// behind. (Another lab may have started since, in another process: what
// belongs to other runs is not looked at.)
func checkNothingLeft(t *testing.T, n netNames) {
	t.Helper()
	mine := namePrefix + n.run
	out, _ := exec.Command("ip", "-o", "link").Output()
	if strings.Contains(string(out), mine) {
		t.Errorf("links left: %s", out)
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), mine) {
			t.Errorf("namespace left: %s", e.Name())
		}
	}
	if _, err := os.Stat(n.runDir()); !os.IsNotExist(err) {
		t.Errorf("run directory %s left (%v)", n.runDir(), err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, n.runDir()+"/") {
			t.Errorf("mount left: %s", l)
		}
	}
	procs, _ := exec.Command("pgrep", "-af", n.runDir()+"/").Output()
	if len(strings.TrimSpace(string(procs))) > 0 {
		t.Errorf("processes left: %s", procs)
	}
}

// tlog writes the lab's progress lines to the test log.
type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSwarmAfterCrash kills a process that holds a running lab (its
// dockerd, containerd and registry live on) and checks that the next
// StartSwarm removes those leftovers and works.
func TestSwarmAfterCrash(t *testing.T) {
	if os.Getenv("GANTRY_LAB_CHILD") == "1" {
		crashChild(t)
		return
	}
	if testing.Short() {
		t.Skip("starts dockerd in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it creates network namespaces and runs dockerd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSwarmAfterCrash$", "-test.v")
	child.Env = append(os.Environ(), "GANTRY_LAB_CHILD=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// The child prints its run directory once its lab is up.
	var staleRun string
	buf := make([]byte, 0, 4096)
	for !strings.Contains(string(buf), "\nREADY ") {
		b := make([]byte, 512)
		n, err := out.Read(b)
		buf = append(buf, b[:n]...)
		if err != nil {
			t.Fatalf("child ended before its lab was up: %v\n%s", err, buf)
		}
	}
	staleRun = strings.Fields(string(buf[strings.Index(string(buf), "\nREADY ")+7:]))[0]
	_ = child.Process.Kill()
	_ = child.Wait()
	if _, err := os.Stat(staleRun); err != nil {
		t.Fatalf("the killed lab left no run directory %s to clean: %v", staleRun, err)
	}

	s, err := StartSwarm(ctx, SwarmOptions{Nodes: 2, Log: tlog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staleRun); !os.IsNotExist(err) {
		t.Errorf("stale run directory %s still there (%v)", staleRun, err)
	}
	out2, _ := exec.Command("ip", "-o", "link").Output()
	if strings.Contains(string(out2), namePrefix+staleRun[len(staleRun)-4:]) {
		t.Errorf("stale links left: %s", out2)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, s.names)
}

// crashChild starts a lab, says where it lives, and waits to be killed.
func crashChild(t *testing.T) {
	s, err := StartSwarm(context.Background(), SwarmOptions{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("\nREADY " + s.names.runDir() + "\n")
	select {}
}
