package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/trainer"
)

// epochsTrainer reports loss and accuracy for 5 epochs with the helper
// gantry init writes, gantry_metrics.py.
const epochsTrainer = `from gantry_metrics import log_metric
for epoch in range(1, 6):
    log_metric("loss", 1.0 / epoch, step=epoch)
    log_metric("accuracy", 0.5 + epoch / 10, step=epoch)
`

// metricsTrainerDir is a trainer directory holding program and the helper.
func metricsTrainerDir(t *testing.T, program string) string {
	t.Helper()
	dir := trainerDir(t, program, "COPY gantry_metrics.py /gantry_metrics.py")
	if err := os.WriteFile(filepath.Join(dir, "gantry_metrics.py"), trainer.Files("")["gantry_metrics.py"], 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestMetricsEpochs: a trainer reports loss and accuracy per epoch through
// the structured line; gantry metrics shows both series, 5 points each,
// as a table and as JSON, and the record holds the finals.
func TestMetricsEpochs(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	id := d.submit(metricsTrainerDir(t, epochsTrainer))
	j := d.waitJob(id, 2*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s (%s), want succeeded", id, j.State, j.Error)
	}
	if j.Metrics.Values["loss"] != 0.2 || j.Metrics.Values["accuracy"] != 1 || j.Metrics.Accuracy == nil || *j.Metrics.Accuracy != 1 || len(j.Metrics.Problems) != 0 {
		t.Errorf("recorded metrics %+v; want loss 0.2, accuracy 1, no problems", j.Metrics)
	}

	table := d.mustGantry("metrics", id)
	rows := strings.Split(strings.TrimSpace(table), "\n")
	if len(rows) != 6 || strings.Join(strings.Fields(rows[0]), " ") != "STEP accuracy loss" {
		t.Fatalf("gantry metrics %s printed:\n%s\nwant a header STEP accuracy loss and 5 rows", id, table)
	}
	for i, row := range rows[1:] {
		epoch := i + 1
		want := fmt.Sprintf("%d %s %s", epoch, strconv.FormatFloat(0.5+float64(epoch)/10, 'g', 6, 64), strconv.FormatFloat(1/float64(epoch), 'g', 6, 64))
		if got := strings.Join(strings.Fields(row), " "); got != want {
			t.Errorf("row %d: %q; want %q", epoch, got, want)
		}
	}

	var s gantry.Series
	if err := json.Unmarshal([]byte(d.mustGantry("metrics", id, "--json")), &s); err != nil {
		t.Fatalf("gantry metrics %s --json: %v", id, err)
	}
	if len(s) != 2 || len(s["loss"]) != 5 || len(s["accuracy"]) != 5 {
		t.Fatalf("gantry metrics %s --json: %v; want loss and accuracy, 5 points each", id, s)
	}
	for i := range 5 {
		if p := s["loss"][i]; p.Step != int64(i+1) || p.Value != 1/float64(i+1) {
			t.Errorf("loss point %d: %+v; want step %d, value %v", i, p, i+1, 1/float64(i+1))
		}
	}

	one := d.mustGantry("metrics", id, "loss")
	if head := strings.Fields(strings.SplitN(one, "\n", 2)[0]); strings.Join(head, " ") != "STEP loss" {
		t.Errorf("gantry metrics %s loss printed:\n%s\nwant only the loss column", id, one)
	}
	if _, errOut, code := d.gantry("metrics", id, "f1"); code == 0 || !strings.Contains(errOut, "no metric f1") {
		t.Errorf("gantry metrics %s f1: exit %d, %q; want an error saying there is no f1", id, code, errOut)
	}
}

// floodTrainer prints N structured metric lines (1,000,000 unless N says
// otherwise) in batches, then the accuracy.
const floodTrainer = `import os, sys
n = int(os.environ.get("N", "1000000"))
w = sys.stdout.write
for start in range(0, n, 10000):
    w("".join('@@gantry metric {"name":"loss","value":%d}\n' % i for i in range(start, min(n, start + 10000))))
sys.stdout.flush()
print("accuracy: 0.9", flush=True)
`

// peakRSS is the peak resident set of process pid (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("gantryd's status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestMetricsMillionLines: a trainer prints 1,000,000 metric lines. The job
// succeeds, its series is capped, gantryd's peak memory barely moves, and
// the records that gantry ls reads carry no series.
//
// The bound on gantryd's growth, 32 MiB: what the reader keeps is at most
// MaxMetrics x MaxSeriesPoints points (1 MiB at 16 bytes a point, its JSON a
// few MiB), the log goes to disk, and the lines themselves are garbage the
// moment they are read. A reader that kept every point holds 16 MiB of
// points in growing slices, and writes their JSON every second: with
// MaxSeriesPoints raised to 2,000,000, gantryd grew by 226 MiB here.
//
// --max-log is 128m, over the engine's own log of this output (about 110 MB
// of json-file): with a smaller cap the engine empties its log file as it
// fills, and following the log then skips lines (with 1m, the reader saw
// about 150,000 of the million). The cap bounds files on disk, not memory.
func TestMetricsMillionLines(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-log", "128m")
	dir := metricsTrainerDir(t, floodTrainer)

	// A small run first, of the same context (its build is then cached):
	// the peak measured after it holds everything but the flood's reading.
	warm := d.submit(dir, "--env", "N=10")
	if j := d.waitJob(warm, 2*time.Minute); j.State != gantry.StateSucceeded {
		t.Fatalf("the warm-up job: %s (%s), want succeeded", j.State, j.Error)
	}
	before := peakRSS(t, d.cmd.Process.Pid)

	id := d.submit(dir)
	j := d.waitJob(id, 5*time.Minute)
	if j.State != gantry.StateSucceeded {
		t.Fatalf("job %s: %s (%s), want succeeded", id, j.State, j.Error)
	}
	grown := peakRSS(t, d.cmd.Process.Pid) - before
	t.Logf("gantryd's peak RSS: %d MiB before the flood, grown by %d KiB", before>>20, grown>>10)
	if grown > 32<<20 {
		t.Errorf("gantryd's peak RSS grew by %d MiB reading 1,000,000 metric lines; want under 32 MiB", grown>>20)
	}
	if v := j.Metrics.Values["loss"]; v != 999999 || len(j.Metrics.Problems) != 0 {
		t.Errorf("recorded loss %v, problems %q; want 999999 and none", v, j.Metrics.Problems)
	}

	var s gantry.Series
	if err := json.Unmarshal([]byte(d.mustGantry("metrics", id, "--json")), &s); err != nil {
		t.Fatalf("gantry metrics %s --json: %v", id, err)
	}
	loss := s["loss"]
	if len(loss) > gantry.MaxSeriesPoints || len(loss) < gantry.MaxSeriesPoints/2 {
		t.Fatalf("the loss series holds %d points; want between %d and %d", len(loss), gantry.MaxSeriesPoints/2, gantry.MaxSeriesPoints)
	}
	if first, last := loss[0], loss[len(loss)-1]; first.Step != 0 || last.Step != 999999 || last.Value != 999999 {
		t.Errorf("the loss series runs from %+v to %+v; want steps 0 to 999999", first, last)
	}

	// The records carry the finals, never the series: gantry ls reads as
	// little as before metrics had series.
	ls := d.mustGantry("ls", "--json")
	if len(ls) > 32<<10 || strings.Contains(ls, "999998") || !strings.Contains(ls, id) {
		t.Errorf("gantry ls --json printed %d bytes (a point of the series among them: %v); want the two records, under 32 KiB, without series",
			len(ls), strings.Contains(ls, "999998"))
	}
}
