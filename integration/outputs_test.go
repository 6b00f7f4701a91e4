package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// writeOutputs is a trainer's head: it writes model.bin (modelBytes) and a
// nested checkpoint into the output directory gantryd names.
const writeOutputs = `
import os
out = os.environ["GANTRY_OUTPUT_DIR"]
os.makedirs(os.path.join(out, "ckpt", "epoch1"), exist_ok=True)
with open(os.path.join(out, "model.bin"), "wb") as f:
    f.write(bytes(range(256)) * 64)
with open(os.path.join(out, "ckpt", "epoch1", "state.txt"), "w") as f:
    f.write("epoch 1 done\n")
`

// wantOutputs are the files writeOutputs leaves, with the digests the test
// computes itself.
func wantOutputs() (files []gantry.OutputFile, content map[string][]byte) {
	content = map[string][]byte{
		"ckpt/epoch1/state.txt": []byte("epoch 1 done\n"),
		"model.bin":             bytes.Repeat(byteRange(), 64),
	}
	for _, p := range []string{"ckpt/epoch1/state.txt", "model.bin"} {
		sum := sha256.Sum256(content[p])
		files = append(files, gantry.OutputFile{Path: p, Size: int64(len(content[p])), Digest: "sha256:" + hex.EncodeToString(sum[:])})
	}
	return files, content
}

// byteRange is Python's bytes(range(256)).
func byteRange() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// checkOutputs asserts that job id's record lists what writeOutputs wrote,
// and that gantry outputs gives the same bytes back: as a listing, under a
// directory, and as a tar stream.
func checkOutputs(t *testing.T, d *gantryd, id string) {
	t.Helper()
	j := d.inspect(id)
	want, content := wantOutputs()
	if j.Outputs == nil {
		t.Fatalf("job %s (%s, %q) recorded no outputs", id, j.State, j.Error)
	}
	got := make([]gantry.OutputFile, len(j.Outputs.Files))
	for i, f := range j.Outputs.Files {
		f.Mode = 0 // the trainer's umask decides
		got[i] = f
	}
	if j.Outputs.Dir != "/output" || !reflect.DeepEqual(got, want) || j.Outputs.Bytes != want[0].Size+want[1].Size {
		t.Errorf("outputs recorded %+v, want in /output: %+v", j.Outputs, want)
	}

	list := d.mustGantry("outputs", id)
	if !strings.HasPrefix(list, "PATH") || !strings.Contains(list, want[1].Digest) || !strings.Contains(list, "ckpt/epoch1/state.txt") {
		t.Errorf("gantry outputs %s listed:\n%s\nwant a header, each path and its digest", id, list)
	}

	dir := filepath.Join(t.TempDir(), "got")
	_, summary, code := d.gantry("outputs", id, "-o", dir)
	if code != 0 || !strings.Contains(summary, "2 files, 16k, written to "+dir) {
		t.Fatalf("gantry outputs -o: exit %d, %q; want 0 and a summary", code, summary)
	}
	for p, data := range content {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || !bytes.Equal(b, data) {
			t.Errorf("%s: %v, %d bytes; want the %d bytes the trainer wrote", p, err, len(b), len(data))
		}
	}
	if _, stderr, code := d.gantry("outputs", id, "-o", dir); code == 0 || !strings.Contains(stderr, "--force") {
		t.Errorf("gantry outputs -o into the same directory again: exit %d, %q; want a refusal naming --force", code, stderr)
	}

	stream := d.mustGantry("outputs", id, "-o", "-")
	tr := tar.NewReader(strings.NewReader(stream))
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("gantry outputs -o -: %v", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			seen[hdr.Name] = bytes.Equal(b, content[hdr.Name])
		}
	}
	if !seen["model.bin"] || !seen["ckpt/epoch1/state.txt"] || len(seen) != 2 {
		t.Errorf("gantry outputs -o - held %v, want both files with their bytes", seen)
	}
}

// A trainer's outputs leave the container: the record lists them by size
// and digest, and gantry outputs gives them back.
func TestOutputsKept(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	id := d.submit(trainerDir(t, writeOutputs+"print('Model accuracy: 0.95', flush=True)\n"))
	j := d.waitJob(id, 3*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s (%q), want succeeded", id, j.State, j.Error)
	}
	checkOutputs(t, d, id)
	noContainersLeft(t, id)
}

// The output directory of an image that runs as root is a volume of the
// run's own, read from the engine's host; one that runs as another user
// has it copied out through the engine (a volume the engine made would be
// root's, and the trainer could not write to it). Both keep the same
// files, and both leave no container (nor its volume) behind.
func TestOutputsOfRootAndNonRootImages(t *testing.T) {
	t.Parallel()
	before := danglingAnonymousVolumes(t)
	d := startDaemon(t)
	program := writeOutputs + "print('Model accuracy: 0.95', flush=True)\n"
	for _, c := range []struct {
		name string
		dir  string
		user []string
	}{
		{"root", "/output", nil},
		{"nobody", "/tmp/out", []string{"USER nobody"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := d.submit(trainerDir(t, program, c.user...), "--output", c.dir)
			j := d.waitJob(id, 3*time.Minute)
			if j.State != gantry.StateSucceeded || j.Outputs == nil {
				t.Fatalf("job %s: %s (%q), outputs %+v; want succeeded, with outputs", id, j.State, j.Error, j.Outputs)
			}
			want, _ := wantOutputs()
			var got []gantry.OutputFile
			for _, f := range j.Outputs.Files {
				f.Mode = 0
				got = append(got, f)
			}
			if j.Outputs.Dir != c.dir || !reflect.DeepEqual(got, want) {
				t.Errorf("outputs %+v, want in %s: %+v", j.Outputs, c.dir, want)
			}
			noContainersLeft(t, id)
		})
	}
	for v := range danglingAnonymousVolumes(t) {
		if !before[v] {
			t.Errorf("volume %s is left, used by no container: a run's output volume was not removed with it", v)
		}
	}
}

// danglingAnonymousVolumes lists the engine's volumes that no container
// uses and that have no name of their own (64 hex digits).
func danglingAnonymousVolumes(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("docker", "volume", "ls", "-q", "--filter", "dangling=true").Output()
	if err != nil {
		t.Fatalf("docker volume ls: %v", err)
	}
	vs := map[string]bool{}
	for _, v := range strings.Fields(string(out)) {
		if len(v) == 64 && strings.Trim(v, "0123456789abcdef") == "" {
			vs[v] = true
		}
	}
	return vs
}

// A trainer that fails (exit 3) or is OOM-killed after writing a
// checkpoint still has it kept.
func TestOutputsOfFailedTraining(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	for _, c := range []struct {
		name, tail string
		args       []string
		want       string
	}{
		{"exit 3", "raise SystemExit(3)\n", nil, "training exited with code 3"},
		{"oom", "x = []\nwhile True:\n    x.append(b'x' * (8 << 20))\n", []string{"--memory", "32m"}, "OOMKilled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			id := d.submit(trainerDir(t, writeOutputs+"print('checkpoint written', flush=True)\n"+c.tail), c.args...)
			j := d.waitJob(id, 3*time.Minute)
			if j.State != gantry.StateFailed || !strings.Contains(j.Error, c.want) {
				t.Fatalf("job %s: %s (%q), want failed with %q", id, j.State, j.Error, c.want)
			}
			checkOutputs(t, d, id)
			noContainersLeft(t, id)
		})
	}
}

// kill -9 of gantryd while a held trainer runs; the trainer then writes
// its outputs and exits while gantryd is down. The restarted gantryd
// re-attaches to the exited container and keeps them, once.
func TestOutputsAfterKill9(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	held := strings.Replace(heldTail, `print("Model accuracy:"`, writeOutputs+`print("Model accuracy:"`, 1)
	id := d.submit(trainerDir(t, held))
	awaitHeld(t, d, id)
	d.kill9()
	release(t, id)
	if out, err := exec.Command("docker", "wait", "gantry-"+id).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("docker wait: %v: %s; want exit 0", err, out)
	}
	d.start()
	j := d.waitJob(id, 3*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("after the restart: %s (%q), want succeeded", j.State, j.Error)
	}
	checkOutputs(t, d, id)
	if n := strings.Count(d.mustGantry("logs", id), "kept the outputs"); n != 1 {
		t.Errorf("the log says %d times that the outputs were kept, want once", n)
	}
	blobs, err := os.ReadDir(filepath.Join(d.dataDir, "outputs", "sha256"))
	if err != nil || len(blobs) != 2 {
		t.Errorf("blobs in the data dir: %v (%v), want the two files, once each, nothing else", blobs, err)
	}
	noContainersLeft(t, id)
}

// Outputs over --max-output fail the job, naming the flag; nothing is
// listed.
func TestOutputsOverTheCap(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	program := "import os\nout = os.environ['GANTRY_OUTPUT_DIR']\nos.makedirs(out, exist_ok=True)\nopen(os.path.join(out, 'big'), 'wb').write(b'x' * 4096)\nprint('Model accuracy: 0.95')\n"
	id := d.submit(trainerDir(t, program), "--max-output", "1k")
	j := d.waitJob(id, 3*time.Minute)
	if j.State != gantry.StateFailed || !strings.Contains(j.Error, "hold over 1k") || !strings.Contains(j.Error, "--max-output") {
		t.Fatalf("job %s: %s (%q), want failed naming the cap and --max-output", id, j.State, j.Error)
	}
	if j.Outputs == nil || len(j.Outputs.Files) != 0 || j.Outputs.Error == "" {
		t.Errorf("outputs recorded %+v, want none listed and the reason", j.Outputs)
	}
	if _, stderr, code := d.gantry("outputs", id); code == 0 || !strings.Contains(stderr, "--max-output") {
		t.Errorf("gantry outputs: exit %d, %q; want a failure that says why", code, stderr)
	}
	noContainersLeft(t, id)
}
