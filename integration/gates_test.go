package integration

import (
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// A gate on accuracy above what the trainer printed, and a gate on a
// metric it never reported: each rejects (exit 3 from submit --wait),
// pushes nothing, and says which gate failed and why, in the outcome line
// and in the record.
func TestGatesReject(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--max-jobs", "2")
	dir := trainerDir(t, lossEpochs+"print('Model accuracy: 0.80')\n")
	for _, tc := range []struct{ name, gate, reason string }{
		{"below", "accuracy>=0.9", "accuracy 0.8000 is below the gate accuracy>=0.9"},
		{"loss-above", "loss<=0.25", "loss 0.3100 is above the gate loss<=0.25"},
		{"never-reported", "f1>=0.5", "the gate needs f1>=0.5, but the job reported no f1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ref := uniqueRef(t)
			out, errOut, code := d.gantry("submit", dir, "--push", ref, "--gate", tc.gate, "--wait")
			if code != 3 {
				t.Errorf("submit --wait exit code %d, want 3 (rejected)\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			id := jobIDFrom(t, out)
			removeJobImage(t, id)
			if want := tc.reason; !strings.Contains(out, "job "+id+" rejected: accuracy 0.8000") || !strings.Contains(out, want) {
				t.Errorf("submit --wait's outcome does not say %q:\n%s", want, out)
			}
			j := d.inspect(id)
			if j.State != gantry.StateRejected || j.Error != tc.reason || j.GatePassed {
				t.Errorf("state %s, error %q, gate passed %v; want rejected, %q", j.State, j.Error, j.GatePassed, tc.reason)
			}
			want, err := gantry.ParseCondition(tc.gate)
			if err != nil {
				t.Fatal(err)
			}
			if g := j.Provenance; g == nil || len(g.Gate.Conditions) != 1 || g.Gate.Conditions[0] != want || g.Gate.Reason != tc.reason {
				t.Errorf("provenance %+v: want the gate %v and the reason %q recorded", g, want, tc.reason)
			}
			if len(j.Pushes) != 0 || servedDigest(t, ref) != "" {
				t.Errorf("a rejected job was pushed: %+v", j.Pushes)
			}
		})
	}
}

// lossEpochs reports a loss for 5 epochs through the structured line, the
// last one $LOSS (0.31 unless given), and leaves its "model" (the loss) in
// its output directory: jobs of one image given another loss ship
// different images, as models trained differently do.
const lossEpochs = `import json, os
final = float(os.environ.get("LOSS") or "0.31")
for epoch in range(1, 6):
    print("@@gantry metric " + json.dumps({"name": "loss", "value": final + (5 - epoch) * 0.1, "step": epoch}), flush=True)
out = os.environ.get("GANTRY_OUTPUT_DIR", "/output")
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "model.txt"), "w").write(str(final))
`

// Promotion in the metric's own direction, end to end: two jobs promote
// the same tag on loss:min (reported per epoch through the structured
// line; the final loss is given with --env, so one image serves both),
// both training at once; whichever the test lets finish first, the tag
// ends on the lower one's image, as the champion's provenance record in
// the registry says, and each record says why, naming the metric and the
// direction.
func TestPromoteOnMinKeepsTheLower(t *testing.T) {
	t.Parallel()
	for _, order := range []string{"lower first", "higher first"} {
		t.Run(strings.ReplaceAll(order, " ", "-"), func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, "--max-jobs", "2")
			dir := trainerDir(t, heldTail+lossEpochs)
			repo := uniqueRepo(t)
			promote := []string{"--promote", "best", "--promote-on", "loss:min"}
			lower := d.submit(dir, append([]string{"--env", "LOSS=0.20", "--push", repo + ":lower"}, promote...)...)
			higher := d.submit(dir, append([]string{"--env", "LOSS=0.30", "--push", repo + ":higher"}, promote...)...)
			lo, hi := promotionRace(t, d, lower, higher, order == "lower first")
			if got := servedDigest(t, repo+":best"); got != lo.Pushes[0].Digest {
				t.Errorf("the tag holds %s, want the lower job's %s (higher: %s)", got, lo.Pushes[0].Digest, hi.Pushes[0].Digest)
			}
			wantLo, wantHi := "promoted: the tag held no image with a provenance record", "kept champion: loss 0.3000 >= 0.2000"
			if order == "higher first" {
				wantLo, wantHi = "promoted: loss 0.2000 < 0.3000", "promoted: the tag held no image with a provenance record"
			}
			if len(lo.Promotions) != 1 || lo.Promotions[0].Reason != wantLo || !lo.Promotions[0].Promoted {
				t.Errorf("the lower job's promotion: %+v, want %q", lo.Promotions, wantLo)
			}
			if len(hi.Promotions) != 1 || hi.Promotions[0].Reason != wantHi {
				t.Errorf("the higher job's promotion: %+v, want %q", hi.Promotions, wantHi)
			}
		})
	}
}
