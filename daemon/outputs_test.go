package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/store"
)

// outEntry is one entry of a tar stream of an output directory.
type outEntry struct {
	name string
	typ  byte
	body string
	link string
	mode int64
}

// outTar returns entries as a tar stream, as the engine sends a directory.
func outTar(t *testing.T, entries ...outEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if e.typ == 0 {
			e.typ = tar.TypeReg
		}
		if e.mode == 0 {
			e.mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil && e.typ == tar.TypeReg {
			t.Fatalf("tar write %s: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar close: %v", err)
	}
	return buf.Bytes()
}

func outDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func outFile(p, body string, mode uint32) gantry.OutputFile {
	return gantry.OutputFile{Path: p, Size: int64(len(body)), Digest: outDigest(body), Mode: mode}
}

// outBlobs lists the blobs kept in d's data dir.
func outBlobs(t *testing.T, d *Daemon) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(d.OutputsDir(), "sha256"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read blobs: %v", err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestKeepOutputs reads tar streams of an output directory, as the engine
// sends them, and checks what is listed, kept and refused.
func TestKeepOutputs(t *testing.T) {
	dir := outEntry{name: "output/", typ: tar.TypeDir, mode: 0o755}
	many := []outEntry{dir}
	for i := range maxOutputFiles + 1 {
		many = append(many, outEntry{name: fmt.Sprintf("output/f%04d", i), body: "x"})
	}
	// Paths that JSON escapes (each '<' takes six bytes) fill the list
	// sooner than their length says.
	long := []outEntry{dir}
	for i := range maxOutputList / (6 * 200) {
		long = append(long, outEntry{name: fmt.Sprintf("output/%d%s", i, strings.Repeat("<", 200)), body: "x"})
	}
	tests := []struct {
		name      string
		entries   []outEntry
		limit     int64
		want      []gantry.OutputFile
		wantErr   string // in the error
		wantLog   string // in the job log
		wantBlobs int
	}{
		{
			name: "nested directories",
			entries: []outEntry{dir,
				{name: "output/model.bin", body: "weights", mode: 0o600},
				{name: "output/ckpt/", typ: tar.TypeDir},
				{name: "output/ckpt/a/", typ: tar.TypeDir},
				{name: "output/ckpt/a/step1", body: "one", mode: 0o755},
				{name: "output/ckpt/b", body: "weights"},
			},
			want: []gantry.OutputFile{
				outFile("ckpt/a/step1", "one", 0o755), outFile("ckpt/b", "weights", 0o644), outFile("model.bin", "weights", 0o600),
			},
			wantBlobs: 2, // the same bytes twice are one blob
		},
		{name: "empty directory", entries: []outEntry{dir}},
		{
			name:    "symlink skipped",
			entries: []outEntry{dir, {name: "output/m", body: "m"}, {name: "output/passwd", typ: tar.TypeSymlink, link: "/etc/passwd"}},
			want:    []gantry.OutputFile{outFile("m", "m", 0o644)},
			wantLog: "skipped /output/passwd (a symlink to /etc/passwd)", wantBlobs: 1,
		},
		{
			name:    "hard link listed with its target's content",
			entries: []outEntry{dir, {name: "output/m", body: "m"}, {name: "output/n", typ: tar.TypeLink, link: "output/m"}},
			want:    []gantry.OutputFile{outFile("m", "m", 0o644), outFile("n", "m", 0o644)}, wantBlobs: 1,
		},
		{
			name:    "device skipped",
			entries: []outEntry{dir, {name: "output/null", typ: tar.TypeChar}},
			wantLog: "skipped /output/null (a device)",
		},
		{
			name:    "over the size cap",
			entries: []outEntry{dir, {name: "output/a", body: strings.Repeat("a", 600)}, {name: "output/b", body: strings.Repeat("b", 600)}},
			limit:   1 << 10, wantErr: "the outputs in /output hold over 1k (gantryd's --max-output, or the job's): write less, or ask for more with --max-output",
			wantBlobs: 1, // kept before the cap was reached: by content, harmless
		},
		{name: "over the file count", entries: many, wantErr: "hold over 1000 files", wantBlobs: 1},
		{name: "over the list's size", entries: long, wantErr: "too many or too long paths", wantBlobs: 1},
		{name: "dot-dot entry", entries: []outEntry{dir, {name: "output/../../etc/cron.d/x", body: "x"}}, wantErr: "outside it"},
		{name: "absolute entry", entries: []outEntry{dir, {name: "/etc/x", body: "x"}}, wantErr: "outside it"},
		{name: "another top name", entries: []outEntry{dir, {name: "etc/x", body: "x"}}, wantErr: "outside it"},
		{name: "not a directory", entries: []outEntry{{name: "output", body: "x"}}, wantErr: "is not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rig := pipeNewRig(t, 1, pipeNewFakes(t))
			logf, err := rig.d.openLog("job")
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			limit := tc.limit
			if limit == 0 {
				limit = 1 << 20
			}
			k := &outputKeeper{d: rig.d, dir: "/output", limit: limit, logf: logf}
			got, err := k.keep(bytes.NewReader(outTar(t, tc.entries...)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("keep: %v, want an error with %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("keep: %v", err)
			} else {
				var bytes int64
				for _, f := range tc.want {
					bytes += f.Size
				}
				want := &gantry.Outputs{Dir: "/output", Files: tc.want, Bytes: bytes}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("keep = %+v, want %+v", got, want)
				}
				for _, f := range got.Files {
					data, err := os.ReadFile(rig.d.outputBlob(f.Digest))
					if err != nil || outDigest(string(data)) != f.Digest {
						t.Errorf("blob of %s: %v, digest of its content not %s", f.Path, err, f.Digest)
					}
				}
			}
			if blobs := outBlobs(t, rig.d); len(blobs) != tc.wantBlobs {
				t.Errorf("blobs kept %v, want %d", blobs, tc.wantBlobs)
			}
			if logText := pipeReadLog(t, rig.d, "job"); !strings.Contains(logText, tc.wantLog) {
				t.Errorf("job log %q, want it to hold %q", logText, tc.wantLog)
			}
		})
	}
}

// outModel is the output directory a fake training leaves.
func outModel(t *testing.T, model string) []byte {
	return outTar(t, outEntry{name: "output/", typ: tar.TypeDir},
		outEntry{name: "output/model.bin", body: model},
		outEntry{name: "output/ckpt/", typ: tar.TypeDir},
		outEntry{name: "output/ckpt/last", body: "checkpoint"})
}

// TestJobOutputs runs jobs whose containers leave outputs: they are
// recorded with the exit, kept once across jobs, and given back by
// WriteOutputs as the files they were.
func TestJobOutputs(t *testing.T) {
	tests := []struct {
		name      string
		exit      runner.Exit
		outputs   func(t *testing.T) []byte // nil: no output directory
		cap       int64
		wantState gantry.State
		wantError string
		wantFiles []gantry.OutputFile
	}{
		{
			name: "succeeded", outputs: func(t *testing.T) []byte { return outModel(t, "weights") },
			wantState: gantry.StateSucceeded,
			wantFiles: []gantry.OutputFile{outFile("ckpt/last", "checkpoint", 0o644), outFile("model.bin", "weights", 0o644)},
		},
		{
			name: "exit 3", exit: runner.Exit{Code: 3}, outputs: func(t *testing.T) []byte { return outModel(t, "weights") },
			wantState: gantry.StateFailed, wantError: "training exited with code 3",
			wantFiles: []gantry.OutputFile{outFile("ckpt/last", "checkpoint", 0o644), outFile("model.bin", "weights", 0o644)},
		},
		{
			name: "OOM", exit: runner.Exit{Code: 137, OOMKilled: true}, outputs: func(t *testing.T) []byte { return outModel(t, "w") },
			wantState: gantry.StateFailed, wantError: "out of memory",
			wantFiles: []gantry.OutputFile{outFile("ckpt/last", "checkpoint", 0o644), outFile("model.bin", "w", 0o644)},
		},
		{name: "no output directory", wantState: gantry.StateSucceeded},
		{
			name: "over the cap", outputs: func(t *testing.T) []byte { return outModel(t, strings.Repeat("w", 4<<10)) }, cap: 1 << 10,
			wantState: gantry.StateFailed, wantError: "the outputs in /output hold over 1k (gantryd's --max-output, or the job's)",
		},
		{
			name: "over the cap and exit 3", exit: runner.Exit{Code: 3}, outputs: func(t *testing.T) []byte { return outModel(t, strings.Repeat("w", 4<<10)) }, cap: 1 << 10,
			wantState: gantry.StateFailed, wantError: "training exited with code 3; the outputs in /output hold over 1k",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := pipeNewFakes(t)
			f.engine.run = func(context.Context, string, io.Writer) (runner.Exit, error) { return tc.exit, nil }
			if tc.outputs != nil {
				data := tc.outputs(t)
				f.engine.copyFrom = func(context.Context, string, string) (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(data)), nil
				}
			}
			rig := pipeNewRig(t, 1, f)
			pipeRun(t, rig.d)
			spec := gantry.Spec{Resources: gantry.Resources{OutputBytes: tc.cap}}
			j, err := rig.d.Submit(context.Background(), spec, pipeTar(t, pipeContext()))
			if err != nil {
				t.Fatal(err)
			}
			end := pipeWait(t, rig.d, j.ID)
			if end.State != tc.wantState || !strings.Contains(end.Error, tc.wantError) {
				t.Errorf("state %s (%q), want %s with %q", end.State, end.Error, tc.wantState, tc.wantError)
			}
			if end.Outputs == nil {
				t.Fatalf("no outputs recorded")
			}
			if got := end.Outputs.Files; !reflect.DeepEqual(got, tc.wantFiles) {
				t.Errorf("files %+v, want %+v", got, tc.wantFiles)
			}
			if tc.wantFiles == nil {
				if _, err := rig.d.Outputs(context.Background(), j.ID); (tc.cap > 0) != (err != nil) {
					t.Errorf("Outputs: %v; want an error only when they could not be kept", err)
				}
				return
			}
			if end.Provenance == nil || !reflect.DeepEqual(end.Provenance.Outputs, end.Outputs) {
				t.Errorf("provenance outputs %+v, want the record's %+v", end.Provenance, end.Outputs)
			}
			var buf bytes.Buffer
			if err := rig.d.WriteOutputs(context.Background(), j.ID, &buf); err != nil {
				t.Fatalf("WriteOutputs: %v", err)
			}
			if got, want := outRead(t, &buf), outFiles(tc.wantFiles); !reflect.DeepEqual(got, want) {
				t.Errorf("WriteOutputs gave %v, want %v", got, want)
			}
		})
	}
}

// outRead reads a tar stream of outputs: each entry's name to its
// content, with directories as "dir" and headers checked.
func outRead(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	got := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("read outputs tar: %v", err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.ModTime.Unix() != 0 {
			t.Errorf("%s: uid %d gid %d mtime %v, want root's, at the epoch", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
		data, _ := io.ReadAll(tr)
		if hdr.Typeflag == tar.TypeDir {
			data = []byte("dir")
		}
		got[hdr.Name] = string(data)
	}
}

// outFiles is what outRead reads of the files whose content is known by
// the test (their digest is the content's).
func outFiles(fs []gantry.OutputFile) map[string]string {
	known := map[string]string{}
	for _, s := range []string{"weights", "w", "checkpoint"} {
		known[outDigest(s)] = s
	}
	want := map[string]string{}
	for _, f := range fs {
		want[f.Path] = known[f.Digest]
		if d := filepath.Dir(f.Path); d != "." {
			want[d+"/"] = "dir"
		}
	}
	return want
}

// TestOutputsShared: two jobs that write the same model keep one blob.
func TestOutputsShared(t *testing.T) {
	f := pipeNewFakes(t)
	data := outModel(t, "weights")
	f.engine.copyFrom = func(context.Context, string, string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	rig := pipeNewRig(t, 1, f)
	pipeRun(t, rig.d)
	for range 2 {
		j := pipeSubmit(t, rig.d, gantry.Spec{})
		if end := pipeWait(t, rig.d, j.ID); end.State != gantry.StateSucceeded || len(end.Outputs.Files) != 2 {
			t.Fatalf("state %s (%q), outputs %+v; want succeeded with 2 files", end.State, end.Error, end.Outputs)
		}
	}
	if blobs := outBlobs(t, rig.d); len(blobs) != 2 {
		t.Errorf("blobs %v, want 2: the model and the checkpoint, once each", blobs)
	}
	// A page of jobs carries their outputs' size, not their lists; Get does.
	jobs, _, err := rig.d.List(context.Background(), gantry.JobFilter{})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("List: %d jobs, %v", len(jobs), err)
	}
	for _, j := range jobs {
		if j.Outputs == nil || j.Outputs.Files != nil || j.Outputs.Bytes != 17 || j.Provenance.Outputs.Files != nil {
			t.Errorf("listed job %s: outputs %+v, provenance's %+v; want the size without the files", j.ID, j.Outputs, j.Provenance.Outputs)
		}
		if full, _ := rig.d.Get(context.Background(), j.ID); len(full.Outputs.Files) != 2 || len(full.Provenance.Outputs.Files) != 2 {
			t.Errorf("Get of job %s after List: outputs %+v; want the files", j.ID, full.Outputs)
		}
	}
}

// TestOutputsAfterRestart stops gantryd while it copies the outputs out:
// nothing is recorded, and the next gantryd re-attaches to the exited
// container and keeps them, once.
func TestOutputsAfterRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := pipeNewFakes(t)
	copying := make(chan struct{})
	f.engine.copyFrom = func(ctx context.Context, id, path string) (io.ReadCloser, error) {
		close(copying)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	rig := pipeNewRig(t, 1, f)
	j := pipeSubmit(t, rig.d, gantry.Spec{})
	done := make(chan error, 1)
	go func() { done <- rig.d.Run(ctx) }()
	pipeReceive(t, "the outputs to be copied", copying)
	cancel()
	if err := pipeReceive(t, "Run to return", done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	left, err := rig.d.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if left.State != gantry.StateRunning || left.Reached(gantry.CheckpointExited) || left.Outputs != nil {
		t.Fatalf("left %s at checkpoint %s with outputs %+v; want running, not exited, no outputs", left.State, left.Checkpoint, left.Outputs)
	}
	if _, err := rig.d.Outputs(context.Background(), j.ID); !errors.Is(err, gantry.ErrConflict) {
		t.Errorf("Outputs of the job left running: %v, want a conflict", err)
	}

	// A blob half written when gantryd stopped is removed at the start.
	partial := filepath.Join(rig.d.OutputsDir(), "sha256", ".in-123")
	os.MkdirAll(filepath.Dir(partial), 0o700)
	os.WriteFile(partial, []byte("half"), 0o600)

	f2 := pipeNewFakes(t)
	f2.engine.setOutputs(pipeContainerID(j.ID), outModel(t, "weights"))
	d2 := pipeNewDaemon(t, rig.dir, 1, rig.st, f2)
	pipeResume(t, d2)
	if pipeExists(t, partial) {
		t.Errorf("the half-written blob %s is left after Prepare", partial)
	}
	end := pipeWait(t, d2, j.ID)
	if end.State != gantry.StateSucceeded || end.Outputs == nil || len(end.Outputs.Files) != 2 {
		t.Fatalf("after the restart: %s (%q), outputs %+v; want succeeded with 2 files", end.State, end.Error, end.Outputs)
	}
	if copies := f2.engine.args("copy"); len(copies) != 1 {
		t.Errorf("copies after the restart %v, want one", copies)
	}
	calls := f2.engine.calls()
	cid := pipeContainerID(j.ID)
	if c := pipeIndex(calls, 0, pipeCall{"copy", cid}); c < 0 || pipeIndex(calls, c, pipeCall{"remove", cid}) < 0 {
		t.Errorf("engine calls %v, want the outputs copied before the container is removed", calls)
	}
	if n := strings.Count(pipeReadLog(t, d2, j.ID), "kept the outputs"); n != 1 {
		t.Errorf("the log says %d times that the outputs were kept, want once", n)
	}
}

// TestOutputsCopyFails: an engine that fails the copy fails the job, with
// its reason.
func TestOutputsCopyFails(t *testing.T) {
	f := pipeNewFakes(t)
	f.engine.copyFrom = func(context.Context, string, string) (io.ReadCloser, error) {
		return nil, fmt.Errorf("copy /output from container ctr: the disk is full")
	}
	rig := pipeNewRig(t, 1, f)
	pipeRun(t, rig.d)
	j := pipeSubmit(t, rig.d, gantry.Spec{})
	end := pipeWait(t, rig.d, j.ID)
	if end.State != gantry.StateFailed || !strings.Contains(end.Error, "the disk is full") {
		t.Errorf("state %s (%q), want failed with the engine's reason", end.State, end.Error)
	}
	if end.Outputs == nil || end.Outputs.Error == "" || end.Outputs.Files != nil {
		t.Errorf("outputs %+v, want the error and no files", end.Outputs)
	}
}

// TestOutputsFitTheRecord: the most a job's outputs may list, in the record
// and again in its provenance, beside the largest spec a client may send
// (its build arguments and run spec also copied into the provenance) and
// the longest reasons, fits the store's cap on a record.
func TestOutputsFitTheRecord(t *testing.T) {
	rig := pipeNewRig(t, 1, pipeNewFakes(t))
	// The longest list the keeper accepts: paths JSON escapes sixfold.
	entries := []outEntry{{name: "output/", typ: tar.TypeDir}}
	var listed int64
	for i := 0; ; i++ {
		p := fmt.Sprintf("%05d%s", i, strings.Repeat("<", 200))
		f := gantry.OutputFile{Path: p, Size: 1 << 40, Digest: outDigest("x"), Mode: 0o777}
		b, _ := json.Marshal(f)
		if listed+int64(len(b))+1 > maxOutputList {
			break
		}
		listed += int64(len(b)) + 1
		entries = append(entries, outEntry{name: "output/" + p, body: "x", mode: 0o777})
	}
	logf, err := rig.d.openLog("job")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	k := &outputKeeper{d: rig.d, dir: "/output", limit: 1 << 30, logf: logf}
	outs, err := k.keep(bytes.NewReader(outTar(t, entries...)))
	if err != nil {
		t.Fatalf("keep the longest list: %v", err)
	}
	for i := range outs.Files {
		outs.Files[i].Size = 1 << 40 // the widest sizes
	}

	spec := gantry.Spec{Build: gantry.BuildSpec{Dockerfile: "Dockerfile", BuildArgs: map[string]string{"A": strings.Repeat("a", 30<<10)}}}
	spec.Run.Env = []string{"B=" + strings.Repeat("b", 30<<10)}
	if data, _ := json.Marshal(spec); len(data) > api64k {
		t.Fatalf("the spec takes %d bytes, over what a client may send", len(data))
	}
	j := gantry.NewJob(spec, time.Now())
	j.Error = strings.Repeat("e", maxReason)
	j.Outputs = outs
	j.Provenance = gantry.NewProvenance(j)
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > store.MaxRecordBytes {
		t.Fatalf("the record takes %d bytes, over the store's %d", len(data), store.MaxRecordBytes)
	}
	if err := rig.st.Create(context.Background(), j); err != nil {
		t.Fatalf("store the record (%d bytes): %v", len(data), err)
	}
	t.Logf("%d files listed; the record takes %d of %d bytes", len(outs.Files), len(data), store.MaxRecordBytes)
}

// api64k is the most a client's spec may take (api.MaxSpecBytes; daemon
// does not import api).
const api64k = 64 << 10
