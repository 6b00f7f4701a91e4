package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/gantry-ml/gantry"
)

// Case 6: what shipping the trained model in the pushed image costs.

// keepModel is appended to the Iris trainer's app.py: it puts the model the
// trainer saved in its working directory into the output directory, unless
// the trainer wrote it there itself, and a note naming the run (%q), so
// that each run's output layer is new to the registry (the seeded model
// alone is the same bytes every run).
const keepModel = `
import os as _os, shutil as _shutil
_out = _os.environ.get("GANTRY_OUTPUT_DIR", "/output")
_os.makedirs(_out, exist_ok=True)
if _os.path.exists("model.joblib") and not _os.path.exists(_os.path.join(_out, "model.joblib")):
    _shutil.copy("model.joblib", _out)
with open(_os.path.join(_out, "run.txt"), "w") as _f:
    _f.write(%q)
`

// outputs is case 6: the warm Iris job with its model shipped as a layer of
// the pushed image (--outputs=layer, the default) against the same job with
// --outputs=none, one of each in each run (each first in every other run),
// each after a one-line change to app.py, both pushing to the warm
// repository (its base layer is there).
// What shipping adds is the time from the exit's record (the accuracy
// event: the outputs are kept by then, in either mode) to the tag served,
// layer minus none in each run; and the size of the output layer.
func (b *bench) outputs(ctx context.Context) error {
	ws, err := b.warmUp(ctx)
	if err != nil {
		return err
	}
	dir, err := b.trainerDir("outputs-gantry")
	if err != nil {
		return err
	}
	modes := []string{gantry.ShipLayer, gantry.ShipNone}
	ref := func(ship string) string { return ws.reg.addr + "/iris-gantry:outputs-" + ship }
	// Prime, untimed: each mode's first push to its tag.
	for _, ship := range modes {
		if _, _, err := b.outputsJob(ctx, dir, ref(ship), ship, "outputs prime "+ship); err != nil {
			return fmt.Errorf("prime: %w", err)
		}
	}
	for i := 1; i <= b.cfg.runs; i++ {
		var exitToTag [2]time.Duration
		// Each mode goes first in every other run, so neither gains
		// from its place.
		for n := range modes {
			k := (n + i) % 2
			ship := modes[k]
			g, j, err := b.outputsJob(ctx, dir, ref(ship), ship, fmt.Sprintf("outputs run %d %s", i, ship))
			if err != nil {
				return fmt.Errorf("run %d, --outputs=%s: %w", i, ship, err)
			}
			exitToTag[k] = g.exitToTag
			b.res.add("outputs/exit-to-tag-"+ship, gantrySide, seconds(g.exitToTag))
			b.res.add("outputs/job-"+ship, gantrySide, seconds(g.total))
			if ship == gantry.ShipLayer {
				b.res.add("outputs/layer", gantrySide, float64(j.Outputs.Layer.Size)/1e3)
			}
		}
		added := exitToTag[0] - exitToTag[1]
		b.res.add("outputs/added", gantrySide, float64(added.Microseconds())/1e3)
		log.Printf("outputs %d/%d: exit→tag with the model as a layer %.3fs, without %.3fs: %+.0f ms",
			i, b.cfg.runs, seconds(exitToTag[0]), seconds(exitToTag[1]), float64(added.Microseconds())/1e3)
	}
	return nil
}

// outputsJob runs the Iris job, its app.py marked with line, pushing to ref
// with --outputs=ship. Its exitToTag runs from the record of the exit (the
// accuracy event) to the end of the push.
func (b *bench) outputsJob(ctx context.Context, dir, ref, ship, line string) (jobRun, *gantry.Job, error) {
	if err := b.mark(dir, line); err != nil {
		return jobRun{}, nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "app.py"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return jobRun{}, nil, err
	}
	_, err = fmt.Fprintf(f, keepModel, line+" "+b.nonce)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return jobRun{}, nil, err
	}
	g, err := b.gantryJob(ctx, b.gd, dir, ref, "--outputs", ship)
	if g.image != "" {
		b.defer_(func() { runQuiet("docker", "rmi", g.image) })
	}
	if err != nil {
		return g, nil, err
	}
	j, err := b.gd.client.Get(ctx, g.id)
	if err != nil {
		return g, nil, err
	}
	if j.Outputs == nil || len(j.Outputs.Files) == 0 {
		return g, j, fmt.Errorf("job %s kept no outputs (%+v): the trainer wrote no model to its output directory", j.ID, j.Outputs)
	}
	if (j.Outputs.Layer != nil) != (ship == gantry.ShipLayer) {
		return g, j, fmt.Errorf("job %s (--outputs=%s) recorded output layer %+v", j.ID, ship, j.Outputs.Layer)
	}
	var exited time.Time
	err = b.gd.client.Events(ctx, 0, j.ID, false, func(e gantry.Event) error {
		if e.Type == gantry.EventAccuracy {
			exited = e.Time
		}
		return nil
	})
	if err != nil {
		return g, j, err
	}
	if exited.IsZero() || j.Times.Push.Finished == nil {
		return g, j, fmt.Errorf("job %s: no accuracy event or push end time", j.ID)
	}
	g.exitToTag = j.Times.Push.Finished.Sub(exited)
	return g, j, nil
}
