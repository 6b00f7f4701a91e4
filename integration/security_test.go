package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// containerSettings is the part of docker inspect that says what a
// container may do.
type containerSettings struct {
	HostConfig struct {
		NetworkMode string
		CapDrop     []string
		CapAdd      []string
		SecurityOpt []string
		PidsLimit   *int64
		Privileged  bool
		Binds       []string
	}
	Mounts []struct{ Source, Destination string }
}

// inspectRunning waits until job id's container runs and returns its
// effective settings, as the engine reports them.
func inspectRunning(t *testing.T, d *gantryd, id string) containerSettings {
	t.Helper()
	d.logHas(id, "before 0", 2*time.Minute)
	out, err := exec.Command("docker", "inspect", "gantry-"+id).Output()
	if err != nil {
		t.Fatalf("docker inspect: %v", err)
	}
	var got []containerSettings
	if err := json.Unmarshal(out, &got); err != nil || len(got) != 1 {
		t.Fatalf("docker inspect: %v: %s", err, out)
	}
	return got[0]
}

// The training container runs with least privilege by default: no network,
// every capability dropped, no-new-privileges, a pids limit, nothing of the
// host mounted; a job relaxes the network and capabilities only explicitly,
// and the record says so.
func TestTrainingContainerLeastPrivilege(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--pids-limit", "256")
	dir := trainerDir(t, fmt.Sprintf(sleeper, 2))

	id := d.submit(dir)
	c := inspectRunning(t, d, id)
	h := c.HostConfig
	if h.NetworkMode != "none" {
		t.Errorf("network %q, want none", h.NetworkMode)
	}
	if !slices.Equal(h.CapDrop, []string{"ALL"}) || len(h.CapAdd) != 0 {
		t.Errorf("capabilities: drop %v, add %v; want drop ALL, add none", h.CapDrop, h.CapAdd)
	}
	if !slices.ContainsFunc(h.SecurityOpt, func(s string) bool { return strings.HasPrefix(s, "no-new-privileges") }) {
		t.Errorf("security options %v lack no-new-privileges", h.SecurityOpt)
	}
	if h.PidsLimit == nil || *h.PidsLimit != 256 {
		t.Errorf("pids limit %v, want 256", h.PidsLimit)
	}
	if h.Privileged || len(h.Binds) != 0 || len(c.Mounts) != 0 {
		t.Errorf("privileged %v, binds %v, mounts %v; want none", h.Privileged, h.Binds, c.Mounts)
	}
	if j := d.waitJob(id, 2*time.Minute); j.State != gantry.StateSucceeded {
		t.Fatalf("a job in the sandbox: %s (%s), want succeeded", j.State, j.Error)
	}

	relaxed := d.submit(dir, "--network", "bridge", "--cap-add", "net_bind_service")
	c = inspectRunning(t, d, relaxed)
	// Newer engines write capabilities with their CAP_ prefix.
	if c.HostConfig.NetworkMode != "bridge" || len(c.HostConfig.CapAdd) != 1 || strings.TrimPrefix(c.HostConfig.CapAdd[0], "CAP_") != "NET_BIND_SERVICE" {
		t.Errorf("relaxed: network %q, cap add %v; want bridge, [NET_BIND_SERVICE]", c.HostConfig.NetworkMode, c.HostConfig.CapAdd)
	}
	j := d.waitJob(relaxed, 2*time.Minute)
	if j.Spec.Sandbox.Network != "bridge" || !slices.Equal(j.Spec.Sandbox.CapAdd, []string{"NET_BIND_SERVICE"}) {
		t.Errorf("the record does not show the relaxation: %+v", j.Spec.Sandbox)
	}
}
