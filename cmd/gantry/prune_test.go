package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// pruneServer answers POST /v1/prune on a unix socket with rep, and keeps
// the bodies it was sent.
func pruneServer(t *testing.T, rep gantry.PruneReport) (host string, bodies *[]string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "g.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/prune" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		got = append(got, string(b))
		json.NewEncoder(w).Encode(rep)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock, &got
}

func runGantry(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// gantry prune sends its flags as the options (those not given left out,
// for gantryd's policy) and prints each job, image and file with the
// totals; --json prints the report as it came.
func TestPruneCommand(t *testing.T) {
	fin := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rep := gantry.PruneReport{OlderThan: gantry.Duration(7 * 24 * time.Hour), Keep: 3,
		Jobs:       []gantry.PrunedJob{{ID: "06h2p0mv3zqppwka", Name: "127.0.0.1:5000/iris", State: gantry.StateSucceeded, Finished: &fin}},
		Images:     []gantry.PrunedImage{{Ref: "gantry/job:06h2p0mv3zqppwka", ID: "sha256:0123456789abcdef", Job: "06h2p0mv3zqppwka", Bytes: 2 << 20}},
		Files:      []gantry.PrunedFile{{Path: "/var/lib/gantry/logs/06h2p0mv3zqppwka.log", Job: "06h2p0mv3zqppwka", Bytes: 2048}},
		BuildCache: 1 << 20, Bytes: 3<<20 + 2048, Kept: 4, Problems: []string{"job 06h2p0mv3zqppwkb kept: its image is in use"},
	}
	host, bodies := pruneServer(t, rep)
	out, err := runGantry(t, "-H", host, "prune", "--older-than", "7d", "--keep", "3")
	if err != nil {
		t.Fatalf("gantry prune: %v\n%s", err, out)
	}
	for _, want := range []string{
		"removed job 06h2p0mv3zqppwka  127.0.0.1:5000/iris  succeeded",
		"removed image gantry/job:06h2p0mv3zqppwka  sha256:0123456789ab",
		"removed file /var/lib/gantry/logs/06h2p0mv3zqppwka.log",
		"not removed: job 06h2p0mv3zqppwkb kept: its image is in use",
		"build cache: ",
		"removed 1 jobs, 1 images, 1 files: ",
		"kept 4 finished jobs (older than 7d, keep 3 per image)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := runGantry(t, "-H", host, "prune", "--dry-run"); err != nil {
		t.Fatal(err)
	}
	out, err = runGantry(t, "-H", host, "prune", "--json", "--older-than", "0", "--keep", "0")
	if err != nil {
		t.Fatal(err)
	}
	var back gantry.PruneReport
	if err := json.Unmarshal([]byte(out), &back); err != nil || len(back.Jobs) != 1 || back.Bytes != rep.Bytes {
		t.Errorf("--json printed %s (%v)", out, err)
	}
	want := []string{`{"older_than":"168h0m0s","keep":3}`, `{"dry_run":true}`, `{"older_than":"0s","keep":0}`}
	if strings.Join(*bodies, "\n") != strings.Join(want, "\n") {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(*bodies, "\n"), strings.Join(want, "\n"))
	}
	for _, bad := range [][]string{{"--keep", "-1"}, {"--older-than", "soon"}} {
		if _, err := runGantry(t, append([]string{"-H", host, "prune"}, bad...)...); err == nil {
			t.Errorf("gantry prune %v: no error", bad)
		}
	}
}
