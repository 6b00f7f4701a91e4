package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

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
	Mounts []struct{ Type, Name, Source, Destination string }
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
// host mounted (the output directory is a volume of the run's own); a job relaxes the network and capabilities only explicitly,
// and the record says so.
func TestTrainingContainerLeastPrivilege(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--pids-limit", "256", "--allow-network", "bridge", "--allow-cap", "NET_BIND_SERVICE")
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
	// The one mount is the run's own output directory: an anonymous
	// volume of the engine's, nothing of the host.
	outputOnly := len(c.Mounts) == 1 && c.Mounts[0].Type == "volume" && c.Mounts[0].Destination == "/output" &&
		len(c.Mounts[0].Name) == 64 && strings.Trim(c.Mounts[0].Name, "0123456789abcdef") == ""
	if h.Privileged || len(h.Binds) != 0 || !outputOnly {
		t.Errorf("privileged %v, binds %v, mounts %+v; want none but an anonymous volume at /output", h.Privileged, h.Binds, c.Mounts)
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

// A malicious trainer hurts only its own job: a 100 MB line with no
// newline, binary output and a forged accuracy line before a failing exit.
func TestHostileTrainerHurtsOnlyItsJob(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	hostile := trainerDir(t, `import sys, os
sys.stdout.write("x" * (100 * 1024 * 1024))
sys.stdout.flush()
os.write(1, bytes(range(256)) * 64)
print()
print("Model accuracy: 0.99", flush=True)
sys.exit(2)
`)
	ref := uniqueRef(t)
	id := d.submit(hostile, "--push", ref, "--min-accuracy", "0.5")
	j := d.waitJob(id, 5*time.Minute)
	if j.State != gantry.StateFailed || !strings.Contains(j.Error, "code 2") {
		t.Errorf("hostile job: %s (%s), want failed with exit code 2", j.State, j.Error)
	}
	if len(j.Pushes) != 0 || servedDigest(t, ref) != "" {
		t.Errorf("a failed job was pushed on a forged accuracy line")
	}
	// gantryd serves on, and the next job is unharmed.
	ok := d.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"))
	if j := d.waitJob(ok, 3*time.Minute); j.State != gantry.StateSucceeded || *j.Metrics.Accuracy != 0.95 {
		t.Errorf("the job after the hostile one: %s (%s)", j.State, j.Error)
	}
}

// Pushing to Debian's docker-registry with htpasswd authentication uses the
// credentials docker login saved; afterwards the password is in no file
// under the data dir and in no log.
func TestPushWithDockerLoginLeavesNoSecret(t *testing.T) {
	t.Parallel()
	const user, password = "trainer", "s3cret-Pa55word-for-gantry-test"
	addr := startAuthRegistry(t, user, password)
	dockerConfig := t.TempDir()
	login := exec.Command("docker", "login", "--username", user, "--password-stdin", addr)
	login.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	login.Stdin = strings.NewReader(password)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("docker login %s: %v\n%s", addr, err, out)
	}

	d := startDaemonEnv(t, []string{"DOCKER_CONFIG=" + dockerConfig})
	ref := addr + "/gantry-it/secret:v1"
	id := d.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"), "--push", ref)
	j := d.waitJob(id, 5*time.Minute)
	if j.State != gantry.StateSucceeded || len(j.Pushes) != 2 {
		t.Fatalf("push with docker login credentials: %s (%s)", j.State, j.Error)
	}

	// Without credentials the same registry refuses, and the error says so.
	anon := startDaemonEnv(t, []string{"DOCKER_CONFIG=" + t.TempDir()})
	id2 := anon.submit(trainerDir(t, "print('Model accuracy: 0.95')\n"), "--push", addr+"/gantry-it/secret:v2")
	j2 := anon.waitJob(id2, 5*time.Minute)
	if j2.State != gantry.StateFailed || !strings.Contains(j2.Error, "docker login") || !strings.Contains(j2.Error, addr) {
		t.Errorf("push without credentials: %s (%q), want failed naming %s and docker login", j2.State, j2.Error, addr)
	}

	for _, dd := range []*gantryd{d, anon} {
		dd.stop()
		if strings.Contains(dd.log.String(), password) {
			t.Errorf("gantryd's log holds the password")
		}
		filepath.WalkDir(dd.dataDir, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			if data, _ := os.ReadFile(p); strings.Contains(string(data), password) {
				t.Errorf("%s holds the password", p)
			}
			return nil
		})
	}
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startAuthRegistry runs Debian's docker-registry with htpasswd
// authentication for user until the test ends, and returns its address.
func startAuthRegistry(t *testing.T, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return runRegistry(t, dir, fmt.Sprintf("auth:\n  htpasswd:\n    realm: gantry-test\n    path: %s\n", htpasswd), http.StatusUnauthorized)
}
