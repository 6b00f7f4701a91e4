package daemon

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// TestSubmitBeyondThePolicy: a request the operator's policy does not allow
// is refused at submit, naming the flag, and nothing of it is kept.
func TestSubmitBeyondThePolicy(t *testing.T) {
	tests := []struct {
		name string
		spec gantry.Spec
		want string
	}{
		{"SYS_ADMIN and DAC_OVERRIDE", gantry.Spec{Sandbox: gantry.Sandbox{CapAdd: []string{"SYS_ADMIN", "DAC_OVERRIDE"}}}, "--allow-host-root"},
		{"DAC_READ_SEARCH", gantry.Spec{Sandbox: gantry.Sandbox{CapAdd: []string{"dac_read_search"}}}, "--allow-host-root"},
		{"a contained capability not listed", gantry.Spec{Sandbox: gantry.Sandbox{CapAdd: []string{"CHOWN"}}}, "--allow-cap CHOWN"},
		{"the host network", gantry.Spec{Sandbox: gantry.Sandbox{Network: "host"}}, "--allow-network"},
		{"the bridge network", gantry.Spec{Sandbox: gantry.Sandbox{Network: "bridge"}}, "--allow-network"},
		{"pids over the ceiling", gantry.Spec{Resources: gantry.Resources{PidsLimit: 100000}}, "--pids-limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.Policy.Resources.PidsLimit = 1024 })
			_, err := rig.d.Submit(context.Background(), tc.spec, nil, pipeTar(t, pipeContext()))
			if !errors.Is(err, gantry.ErrForbidden) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Submit: %v; want ErrForbidden naming %s", err, tc.want)
			}
			assertNothingKept(t, rig)
		})
	}
}

// assertNothingKept fails when the rig's daemon holds a job record or a
// build context.
func assertNothingKept(t *testing.T, rig *pipeRig) {
	t.Helper()
	jobs, _, err := rig.d.List(context.Background(), gantry.JobFilter{})
	if err != nil || len(jobs) != 0 {
		t.Errorf("jobs recorded: %d (%v), want none", len(jobs), err)
	}
	if left, _ := os.ReadDir(filepath.Join(rig.dir, "contexts")); len(left) != 0 {
		t.Errorf("build contexts left: %v", left)
	}
}

// TestQueueBounds: submissions beyond --max-queue, or beyond the bytes of
// contexts the queue may hold, are refused as "too many"; a job leaving the
// queue (started or canceled) makes room again.
func TestQueueBounds(t *testing.T) {
	ctx := context.Background()
	t.Run("count", func(t *testing.T) {
		rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.Policy.MaxQueue = 2 })
		a := pipeSubmit(t, rig.d, gantry.Spec{})
		pipeSubmit(t, rig.d, gantry.Spec{})
		_, err := rig.d.Submit(ctx, gantry.Spec{}, nil, pipeTar(t, pipeContext()))
		if !errors.Is(err, gantry.ErrTooMany) || !strings.Contains(err.Error(), "--max-queue 2") {
			t.Fatalf("third Submit: %v; want ErrTooMany naming --max-queue 2", err)
		}
		if _, err := rig.d.Cancel(ctx, a.ID); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		pipeSubmit(t, rig.d, gantry.Spec{})
	})
	t.Run("bytes", func(t *testing.T) {
		var size int64 // what unpacking counts: the files' bytes
		for _, body := range pipeContext() {
			size += int64(len(body))
		}
		rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.Policy.MaxQueuedBytes = size })
		pipeSubmit(t, rig.d, gantry.Spec{})
		_, err := rig.d.Submit(ctx, gantry.Spec{}, nil, pipeTar(t, pipeContext()))
		if !errors.Is(err, gantry.ErrTooMany) || !strings.Contains(err.Error(), "--max-queued-bytes") {
			t.Fatalf("second Submit: %v; want ErrTooMany naming --max-queued-bytes", err)
		}
	})
	t.Run("a restart counts what waits", func(t *testing.T) {
		rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.Policy.MaxQueue = 1 })
		pipeSubmit(t, rig.d, gantry.Spec{})
		again := pipeNewDaemon(t, rig.dir, 1, rig.st, rig.f, func(c *Config) { c.Policy.MaxQueue = 1 })
		if err := again.Prepare(ctx); err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		if _, err := again.Submit(ctx, gantry.Spec{}, nil, pipeTar(t, pipeContext())); !errors.Is(err, gantry.ErrTooMany) {
			t.Fatalf("Submit after a restart: %v; want ErrTooMany", err)
		}
	})
	t.Run("a started job leaves the queue", func(t *testing.T) {
		rig := pipeNewRig(t, 1, pipeNewFakes(t), func(c *Config) { c.Policy.MaxQueue = 1 })
		pipeRun(t, rig.d)
		j := pipeSubmit(t, rig.d, gantry.Spec{})
		pipeWait(t, rig.d, j.ID)
		pipeSubmit(t, rig.d, gantry.Spec{})
	})
}

func TestFetchRule(t *testing.T) {
	names := map[string]string{"files.example.com": "93.184.216.34", "localhost": "127.0.0.1", "nas.lan": "192.168.1.20", "meta": "169.254.169.254"}
	resolve := func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return []netip.Addr{netip.MustParseAddr(a)}, nil
		}
		return nil, errors.New("no such host")
	}
	tests := []struct {
		name, dockerfile string
		args             map[string]string
		private          bool
		want             string // "" when allowed
	}{
		{name: "a context file", dockerfile: "FROM x\nADD app.py /app/\n"},
		{name: "a public URL", dockerfile: "FROM x\nADD https://files.example.com/data.csv /data/\n"},
		{name: "loopback by address", dockerfile: "FROM x\nADD http://127.0.0.1:8080/secret /s\n", want: "line 2"},
		{name: "loopback by name", dockerfile: "FROM x\nADD http://localhost/secret /s\n", want: "127.0.0.1"},
		{name: "IPv6 loopback", dockerfile: "FROM x\nADD http://[::1]:9/x /x\n", want: "::1"},
		{name: "IPv4-mapped loopback", dockerfile: "FROM x\nADD http://[::ffff:127.0.0.1]/x /x\n", want: "host itself"},
		{name: "unspecified", dockerfile: "FROM x\nADD http://0.0.0.0:5000/x /x\n", want: "host itself"},
		{name: "link-local metadata", dockerfile: "FROM x\nADD http://meta/latest /x\n", want: "169.254.169.254"},
		{name: "private", dockerfile: "FROM x\nADD http://nas.lan/x /x\n", want: "--build-allow-private"},
		{name: "private, allowed", dockerfile: "FROM x\nADD http://nas.lan/x /x\n", private: true},
		{name: "loopback, private allowed", dockerfile: "FROM x\nADD http://127.0.0.1/x /x\n", private: true, want: "host itself"},
		{name: "through a build arg", dockerfile: "FROM x\nARG SRC\nADD ${SRC} /x\n", args: map[string]string{"SRC": "http://127.0.0.1/x"}, want: "127.0.0.1"},
		{name: "through an ARG default", dockerfile: "ARG H=127.0.0.1\nFROM x\nARG H\nADD http://$H/x /x\n", want: "127.0.0.1"},
		{name: "through ENV", dockerfile: "FROM x\nENV H=localhost\nADD http://${H}:80/x /x\n", want: "127.0.0.1"},
		{name: "an unknown variable", dockerfile: "FROM x\nADD $FROM_BASE /x\n", want: "FROM_BASE"},
		{name: "a git source", dockerfile: "FROM x\nADD git@localhost:repo.git /src\n", want: "127.0.0.1"},
		{name: "several sources, the last local", dockerfile: "FROM x\nADD a.txt http://127.0.0.1/b /dst/\n", want: "127.0.0.1"},
		{name: "with flags", dockerfile: "FROM x\nADD --chown=1:1 http://127.0.0.1/b /dst\n", want: "127.0.0.1"},
		{name: "JSON form", dockerfile: "FROM x\nADD [\"http://127.0.0.1/b\", \"/dst\"]\n", want: "127.0.0.1"},
		{name: "an unresolvable name", dockerfile: "FROM x\nADD http://nowhere.invalid/x /x\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(tc.dockerfile), 0o600); err != nil {
				t.Fatal(err)
			}
			r := fetchRule{allowPrivate: tc.private, resolve: resolve}
			df, err := readDockerfile(dir, "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			err = r.checkFetches(context.Background(), df, "Dockerfile", tc.args)
			if tc.want == "" {
				if err != nil {
					t.Errorf("checkFetches: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, gantry.ErrForbidden) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("checkFetches: %v; want ErrForbidden saying %q", err, tc.want)
			}
		})
	}
}

// TestHardLinksHashedOnce: a context of many hard links to one file reads
// that file once, not once per link.
func TestHardLinksHashedOnce(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "weights.bin")
	if err := os.WriteFile(big, []byte(strings.Repeat("w", 1<<16)), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := os.Link(big, filepath.Join(dir, "link"+string(rune('a'+i%26))+string(rune('a'+i/26)))); err != nil {
			t.Fatal(err)
		}
	}
	reads := 0
	old := hashFile
	hashFile = func(root *os.Root, name string) (string, error) { reads++; return old(root, name) }
	defer func() { hashFile = old }()
	files, err := fileDigests(dir)
	if err != nil {
		t.Fatalf("fileDigests: %v", err)
	}
	if len(files) != 101 || reads != 1 {
		t.Errorf("%d files recorded with %d reads; want 101 files, 1 read", len(files), reads)
	}
	for name, d := range files {
		if d != files["weights.bin"] {
			t.Errorf("%s: digest %s, want the linked file's %s", name, d, files["weights.bin"])
		}
	}
}
