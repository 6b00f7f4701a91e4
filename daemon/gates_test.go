package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/registry"
)

// gatesTrained records a job of spec that trained, exited 0 and reported
// metrics m, as a gantryd killed before the gate would have left it: the
// gate is the next step when the daemon resumes it.
func gatesTrained(t *testing.T, rig *pipeRig, spec gantry.Spec, m gantry.Metrics) *gantry.Job {
	t.Helper()
	return pipeRecord(t, rig.st, gantry.NewJob(spec, time.Now()), func(j *gantry.Job) {
		j.Image, j.ContainerID, j.ExitCode = pipeImageID(j.ID), pipeContainerID(j.ID), pipeInt(0)
		j.Metrics, j.Checkpoint = m, gantry.CheckpointExited
	}, gantry.StateBuilding, gantry.StateRunning)
}

// A gate on a named metric: the job passes when the value reported meets
// it, and is rejected, saying why, when it does not or when the job never
// reported that metric. The verdict, with every condition, is recorded.
func TestGateOnANamedMetric(t *testing.T) {
	loss := gantry.Condition{Metric: "loss", Op: "<=", Value: 0.2}
	tests := []struct {
		name   string
		m      gantry.Metrics
		state  gantry.State
		reason string
	}{
		{"below the gate", gantry.Metrics{Accuracy: pipeFloat(0.9), Values: map[string]float64{"accuracy": 0.9, "loss": 0.12}}, gantry.StateSucceeded, ""},
		{"above the gate", gantry.Metrics{Accuracy: pipeFloat(0.9), Values: map[string]float64{"accuracy": 0.9, "loss": 0.31}}, gantry.StateRejected,
			"loss 0.3100 is above the gate loss<=0.2"},
		{"never reported", gantry.Metrics{Accuracy: pipeFloat(0.9)}, gantry.StateRejected,
			"the gate needs loss<=0.2, but the job reported no loss"},
		{"both gates fail", gantry.Metrics{Accuracy: pipeFloat(0.5), Values: map[string]float64{"accuracy": 0.5, "loss": 0.31}}, gantry.StateRejected,
			"accuracy 0.5000 is below the gate accuracy>=0.8; loss 0.3100 is above the gate loss<=0.2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rig := pipeNewRig(t, 1, pipeNewFakes(t))
			spec := gantry.Spec{MinAccuracy: pipeFloat(0.8), Gates: []gantry.Condition{loss}}
			j := gatesTrained(t, rig, spec, tc.m)
			pipeResume(t, rig.d)
			end := pipeWait(t, rig.d, j.ID)
			if end.State != tc.state || end.Error != tc.reason {
				t.Errorf("state %s, error %q; want %s, %q", end.State, end.Error, tc.state, tc.reason)
			}
			if end.GatePassed != (tc.state == gantry.StateSucceeded) {
				t.Errorf("gate passed %v, want %v", end.GatePassed, !end.GatePassed)
			}
			want := []gantry.Condition{{Metric: "accuracy", Op: ">=", Value: 0.8}, loss}
			if g := end.Provenance.Gate; !slices.Equal(g.Conditions, want) || g.Reason != tc.reason {
				t.Errorf("provenance gate %+v, want conditions %v and reason %q", g, want, tc.reason)
			}
			if log := pipeReadLog(t, rig.d, j.ID); tc.reason != "" && !strings.Contains(log, "rejected: "+tc.reason) {
				t.Errorf("the log does not say why the job was rejected:\n%s", log)
			}
		})
	}
}

// gatesRegistryRig is a daemon with the fakes but a real Pusher, to an
// in-process registry, whose engine holds a different image for each job.
func gatesRegistryRig(t *testing.T) (*pipeRig, string) {
	t.Helper()
	f := pipeNewFakes(t)
	dir := t.TempDir()
	bolt := pipeOpenStore(t, filepath.Join(dir, "gantry.db"))
	t.Cleanup(func() { bolt.Close() })
	var (
		mu     sync.Mutex
		images = map[string]v1.Image{}
	)
	source := func(ctx context.Context, name string) (v1.Image, error) {
		mu.Lock()
		defer mu.Unlock()
		if images[name] == nil {
			img, err := random.Image(256, 1)
			if err != nil {
				return nil, err
			}
			images[name] = img
		}
		return images[name], nil
	}
	d, err := New(Config{
		DataDir: dir, Instance: pipeInstance, MaxJobs: 1, StopTimeout: time.Second,
		Policy: gantry.Policy{ContextBytes: 1 << 20, ContextEntries: 100},
		Logger: slog.New(slog.DiscardHandler),
	}, bolt, f.builder, f.engine, registry.New(registry.WithKeychain(authn.NewMultiKeychain())), source)
	if err != nil {
		t.Fatal(err)
	}
	return &pipeRig{dir: dir, st: bolt, d: d, f: f}, newShipRegistry(t).host
}

// gatesPassed records a job that passed its gate with metrics m and may be
// pushed (gantry push), promoting as spec says.
func gatesPassed(t *testing.T, rig *pipeRig, spec gantry.Spec, m gantry.Metrics) *gantry.Job {
	t.Helper()
	return pipeRecord(t, rig.st, gantry.NewJob(spec, time.Now()), func(j *gantry.Job) {
		j.GatePassed, j.Image, j.ExitCode, j.Metrics = true, pipeImageID(j.ID), pipeInt(0), m
	}, gantry.StateBuilding, gantry.StateRunning, gantry.StateSucceeded)
}

// gatesPush pushes job id as gantry push does and returns its record.
func gatesPush(t *testing.T, rig *pipeRig, id string) *gantry.Job {
	t.Helper()
	j, err := rig.d.Push(context.Background(), id, nil, gantry.Discard)
	if err != nil {
		t.Fatalf("Push %s: %v", id, err)
	}
	return j
}

// gatesHolder is the digest the tag ref holds in the registry.
func gatesHolder(t *testing.T, rig *pipeRig, ref string) string {
	t.Helper()
	d, err := rig.d.pusher.Resolve(context.Background(), ref)
	if err != nil {
		t.Fatalf("resolve %s: %v", ref, err)
	}
	return d
}

func lossOf(v float64) gantry.Metrics { return gantry.Metrics{Values: map[string]float64{"loss": v}} }

// Promotion on loss:min: whichever of two jobs pushes first, the tag ends
// on the one with the lower loss, as the champion's provenance record in the
// registry says, and each decision names the metric.
func TestPromoteOnLossKeepsTheLower(t *testing.T) {
	for _, lowerFirst := range []bool{true, false} {
		name := map[bool]string{true: "lower first", false: "higher first"}[lowerFirst]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rig, host := gatesRegistryRig(t)
			champion := host + "/iris:champion"
			spec := func(tag string) gantry.Spec {
				return gantry.Spec{Push: []string{host + "/iris:" + tag}, Promote: "champion", PromoteOn: "loss:min"}
			}
			lower := gatesPassed(t, rig, spec("lower"), lossOf(0.21))
			higher := gatesPassed(t, rig, spec("higher"), lossOf(0.25))
			first, second := lower, higher
			if !lowerFirst {
				first, second = higher, lower
			}
			first = gatesPush(t, rig, first.ID)
			second = gatesPush(t, rig, second.ID)
			lower, higher = first, second
			if !lowerFirst {
				lower, higher = second, first
			}
			if got, want := gatesHolder(t, rig, champion), lower.Pushes[0].Digest; got != want {
				t.Errorf("the champion tag holds %s, want the lower loss's %s (higher: %s)", got, want, higher.Pushes[0].Digest)
			}
			wantF, wantS := "promoted: the tag held no image with a provenance record", "kept champion: loss 0.2500 >= 0.2100"
			if !lowerFirst {
				wantS = "promoted: loss 0.2100 < 0.2500"
			}
			for _, c := range []struct {
				j    *gantry.Job
				want string
			}{{first, wantF}, {second, wantS}} {
				if len(c.j.Promotions) != 1 || c.j.Promotions[0].Reason != c.want || c.j.Promotions[0].Tag != champion {
					t.Errorf("job %s: promotions %+v, want one on %s: %q", c.j.ID, c.j.Promotions, champion, c.want)
				}
			}
		})
	}
}

// A job that promotes on a metric it never reported moves no tag, and says
// why; a champion whose record lacks the metric (from before named metrics,
// or promoted on another) is replaced, saying so.
func TestPromoteOnAMissingMetric(t *testing.T) {
	rig, host := gatesRegistryRig(t)
	champion := host + "/iris:champion"
	old := gatesPush(t, rig, gatesPassed(t, rig, gantry.Spec{Push: []string{host + "/iris:old"}, Promote: "champion"},
		gantry.Metrics{Accuracy: pipeFloat(0.9)}).ID)
	if gatesHolder(t, rig, champion) != old.Pushes[0].Digest {
		t.Fatalf("the first job did not take the tag: %+v", old.Promotions)
	}
	spec := gantry.Spec{Push: []string{host + "/iris:new"}, Promote: "champion", PromoteOn: "loss:min"}
	none := gatesPush(t, rig, gatesPassed(t, rig, spec, gantry.Metrics{Accuracy: pipeFloat(0.99)}).ID)
	want := "not promoted: the job reported no loss, the metric it promotes on (loss:min)"
	if len(none.Promotions) != 1 || none.Promotions[0].Promoted || none.Promotions[0].Reason != want {
		t.Errorf("a job without loss: promotions %+v, want one not promoted: %q", none.Promotions, want)
	}
	if none.State != gantry.StateSucceeded || gatesHolder(t, rig, champion) != old.Pushes[0].Digest {
		t.Errorf("a job without loss: %s (%s), and it moved the tag", none.State, none.Error)
	}
	with := gatesPush(t, rig, gatesPassed(t, rig, spec, lossOf(0.4)).ID)
	want = "promoted: the provenance record of the image the tag held has no loss"
	if len(with.Promotions) != 1 || !with.Promotions[0].Promoted || with.Promotions[0].Reason != want {
		t.Errorf("a job with loss: promotions %+v, want promoted: %q", with.Promotions, want)
	}
	if gatesHolder(t, rig, champion) != with.Pushes[0].Digest {
		t.Errorf("the tag did not move to the job with loss")
	}
	h, err := rig.d.History(context.Background(), host+"/iris", "champion")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].Job != with.ID || h[0].Metric != "loss" || h[0].Value == nil || *h[0].Value != 0.4 || h[2].Metric != "" {
		t.Errorf("history %+v: want the newest naming loss 0.4, the oldest no metric (it promoted on accuracy)", h)
	}
}
