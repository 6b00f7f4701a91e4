package integration

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-ml/gantry"
)

// forcedTrainer prints the accuracy its ACC build argument gives.
func forcedTrainer(t *testing.T) string {
	return trainerDir(t, "import os\nprint('Model accuracy:', os.environ['ACC'], flush=True)\n", "ARG ACC", "ENV ACC=${ACC}")
}

// repoOf returns the repository of a reference made by uniqueRef.
func repoOf(ref string) string { return ref[:strings.LastIndex(ref, ":")] }

// fetchProvenance reads the provenance artifact that refers to the image
// digest in repo, with go-containerregistry, as anyone could.
func fetchProvenance(t *testing.T, repo, digest string) []byte {
	t.Helper()
	d, err := name.NewDigest(repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idx, err := remote.Referrers(d, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("referrers of %s: %v", d, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range m.Manifests {
		if desc.ArtifactType != gantry.ProvenanceType {
			continue
		}
		img, err := remote.Image(d.Context().Digest(desc.Digest.String()), remote.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("provenance artifact %s: %d layers, %v", desc.Digest, len(layers), err)
		}
		rc, err := layers[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	t.Fatalf("no provenance artifact refers to %s (referrers: %+v)", d, m.Manifests)
	return nil
}

// Three jobs with accuracies 0.90, 0.80, 0.95 promoting "champion": after
// each, the champion tag holds the expected image and each record says why;
// the provenance artifact fetched by the image digest equals inspect's
// record; history and diff show what they should.
func TestPromoteOnlyBetterModels(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	dir := forcedTrainer(t)
	repo := uniqueRepo(t)
	champion := repo + ":champion"

	steps := []struct {
		acc, reason string
		promoted    bool
		holder      int // which job holds the tag after this one
	}{
		{"0.90", "promoted: the tag held no image with a provenance record", true, 0},
		{"0.80", "kept champion: accuracy 0.8000 <= 0.9000", false, 0},
		{"0.95", "promoted: accuracy 0.9500 > 0.9000", true, 2},
	}
	var jobs []*gantry.Job
	for i, s := range steps {
		ref := repo + ":run-" + s.acc
		id := d.submit(dir, "--build-arg", "ACC="+s.acc, "--push", ref, "--promote", "champion")
		j := d.waitJob(id, 5*time.Minute)
		if j.State != gantry.StateSucceeded || len(j.Promotions) != 1 {
			t.Fatalf("job %d (%s): %s (%s), promotions %+v", i, s.acc, j.State, j.Error, j.Promotions)
		}
		jobs = append(jobs, j)
		p := j.Promotions[0]
		if p.Promoted != s.promoted || p.Reason != s.reason || p.Tag != champion {
			t.Errorf("job %d (%s): promotion %+v, want promoted=%v, %q", i, s.acc, p, s.promoted, s.reason)
		}
		if got, want := servedDigest(t, champion), jobs[s.holder].Pushes[0].Digest; got != want {
			t.Errorf("after job %d (%s) the champion tag holds %s, want job %d's %s", i, s.acc, got, s.holder, want)
		}
		// The image's own digest is unchanged by the artifact, and the
		// immutable job tag holds it too.
		if served := servedDigest(t, ref); served != j.Pushes[0].Digest {
			t.Errorf("job %d: %s serves %s, recorded %s", i, ref, served, j.Pushes[0].Digest)
		}
		if served := servedDigest(t, repo+":job-"+j.ID); served != j.Pushes[0].Digest {
			t.Errorf("job %d: the job-%s tag serves %s, want %s", i, j.ID, served, j.Pushes[0].Digest)
		}
		// The provenance record in the registry is inspect's.
		got := fetchProvenance(t, repo, j.Pushes[0].Digest)
		want, _ := json.Marshal(j.Provenance)
		var a, b any
		json.Unmarshal(got, &a)
		json.Unmarshal(want, &b)
		if ga, _ := json.Marshal(a); string(ga) != string(mustJSON(b)) {
			t.Errorf("job %d: the registry's provenance record\n%s\ndiffers from inspect's\n%s", i, got, want)
		}
		if j.Provenance == nil || j.Provenance.Metrics.Accuracy == nil || j.Provenance.Inputs.ContextDigest == "" ||
			j.Provenance.Inputs.DockerfileDigest == "" || len(j.Provenance.Inputs.Bases) == 0 || j.Provenance.Inputs.Bases[0].Digest == "" {
			t.Errorf("job %d: provenance lacks inputs: %+v", i, j.Provenance)
		}
	}

	var h []gantry.HistoryEntry
	if err := json.Unmarshal([]byte(d.mustGantry("history", repo, "--tag", "champion", "--json")), &h); err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].Job != jobs[2].ID || h[2].Job != jobs[0].ID {
		t.Fatalf("history: %+v, want the three jobs newest first", h)
	}
	for i, e := range h {
		if want := i == 0; e.Champion != want {
			t.Errorf("history entry %d (%s): champion %v, want %v", i, e.Job, e.Champion, want)
		}
	}
	diff := d.mustGantry("diff", jobs[0].ID, jobs[2].ID)
	for _, want := range []string{"build arg: ~ ACC: 0.90 -> 0.95", "accuracy: 0.9000 -> 0.9500", "image: "} {
		if !strings.Contains(diff, want) {
			t.Errorf("gantry diff lacks %q:\n%s", want, diff)
		}
	}
	if strings.Contains(diff, "context:") {
		t.Errorf("gantry diff shows context changes for the same context:\n%s", diff)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// heldTrainer prints the accuracy its ACC build argument gives once the
// test releases it, so the test, not timing, decides which job finishes
// first.
func heldTrainer(t *testing.T) string {
	return trainerDir(t, heldTail, "ARG ACC", "ENV ACC=${ACC}")
}

// promotionRace lets two held jobs that promote the same tag end in turn,
// winner first when winnerFirst: the second reports once the first has
// ended, so the first's promotion is decided before. It returns their
// records, winner's first, once both succeeded.
func promotionRace(t *testing.T, d *gantryd, winner, loser string, winnerFirst bool) (w, l *gantry.Job) {
	t.Helper()
	awaitHeld(t, d, winner)
	awaitHeld(t, d, loser)
	first, second := loser, winner
	if winnerFirst {
		first, second = winner, loser
	}
	release(t, first)
	f := d.waitJob(first, 5*time.Minute)
	release(t, second)
	s := d.waitJob(second, 5*time.Minute)
	if f.State != gantry.StateSucceeded || s.State != gantry.StateSucceeded {
		t.Fatalf("jobs: %s (%s), %s (%s)", f.State, f.Error, s.State, s.Error)
	}
	if winnerFirst {
		return f, s
	}
	return s, f
}

// Two jobs promoting the same tag, both training at once: whichever the
// test lets finish first, the tag ends on the better job's image, and each
// record says why.
func TestPromotionRaceKeepsTheBetter(t *testing.T) {
	t.Parallel()
	for _, order := range []string{"better first", "worse first"} {
		t.Run(strings.ReplaceAll(order, " ", "-"), func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, "--max-jobs", "2")
			dir := heldTrainer(t)
			repo := uniqueRepo(t)
			better := d.submit(dir, "--build-arg", "ACC=0.97", "--push", repo+":better", "--promote", "champion")
			worse := d.submit(dir, "--build-arg", "ACC=0.91", "--push", repo+":worse", "--promote", "champion")
			b, w := promotionRace(t, d, better, worse, order == "better first")
			if got := servedDigest(t, repo+":champion"); got != b.Pushes[0].Digest {
				t.Errorf("the champion tag holds %s, want the better job's %s (worse: %s)", got, b.Pushes[0].Digest, w.Pushes[0].Digest)
			}
			wantB, wantW := "promoted: the tag held no image with a provenance record", "kept champion: accuracy 0.9100 <= 0.9700"
			if order == "worse first" {
				wantB, wantW = "promoted: accuracy 0.9700 > 0.9100", "promoted: the tag held no image with a provenance record"
			}
			if len(b.Promotions) != 1 || b.Promotions[0].Reason != wantB {
				t.Errorf("the better job's promotion: %+v, want %q", b.Promotions, wantB)
			}
			if len(w.Promotions) != 1 || w.Promotions[0].Reason != wantW {
				t.Errorf("the worse job's promotion: %+v, want %q", w.Promotions, wantW)
			}
		})
	}
}
