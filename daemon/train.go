package daemon

// Training: the container runs (or is re-attached to) until it exits, its
// output goes to the log and to the metric reader.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/internal/iox"
	"github.com/gantry-ml/gantry/internal/joblog"
	"github.com/gantry-ml/gantry/runner"
	"github.com/gantry-ml/gantry/trainer"
)

// logCap is the training output job j keeps: its own cap, or for a job
// recorded before jobs had one, the policy's.
func (d *Daemon) logCap(j *gantry.Job) int64 {
	if n := j.Spec.Resources.LogBytes; n > 0 {
		return n
	}
	return d.cfg.Policy.Resources.LogBytes
}

// trainingLine says that training begins in container cid.
func trainingLine(cid string) string { return fmt.Sprintf("==> training in container %.12s", cid) }

// trainingMarker is the log line after which a container's output starts,
// as stored: a line of gantryd's own, which no training output can forge.
func trainingMarker(cid string) string { return joblog.Line(trainingLine(cid)) }

// train runs (or re-attaches to) the job's container until it exits, and
// reads its metrics from the output: the finals and problems it returns go
// to the record, the series to their own file (SeriesPath), written as they
// grow and whole before train returns. The training timeout counts from when
// the job first started running, across restarts. When the engine goes away
// mid-way, train waits for it and re-attaches if the container survived.
func (d *Daemon) train(ctx context.Context, j *gantry.Job, logf *jobLog) (runner.Exit, gantry.Metrics, error) {
	reader, err := trainer.ReaderFor(&j.Spec)
	if err != nil {
		return runner.Exit{}, gantry.Metrics{}, err
	}
	stopSeries := d.keepSeries(j.ID, reader)
	defer stopSeries()
	lines := iox.NewLineSplitter(maxLine, reader.Line)
	// A flood of output fills the log only up to its cap; the metric reader
	// still reads every line.
	capped := &capWriter{w: logf.Output(), left: d.logCap(j), note: func() {
		logf.Linef("==> the training output ran over the log's cap; the rest is not kept")
	}}
	out := &countWriter{w: io.MultiWriter(capped, lines)}

	// The limit counts from when training first started, across restarts.
	tctx, cancel := context.WithCancel(ctx)
	if limit := time.Duration(j.Spec.Timeouts.Train); limit > 0 {
		started := d.now()
		if j.Times.Run.Started != nil {
			started = *j.Times.Run.Started
		}
		tctx, cancel = context.WithDeadlineCause(ctx, started.Add(limit), &timeoutError{"training", limit})
	}
	defer cancel()
	for {
		// The engine replays the log from the start: skip what we hold.
		exit, err := d.engine.Run(tctx, j.ContainerID, &iox.SkipWriter{W: out, Skip: out.n}, d.placed(ctx, j.ID, logf))
		if err == nil {
			lines.Flush()
			stopSeries()
			if err := d.writeSeries(j.ID, reader.Series(), true); err != nil {
				return runner.Exit{}, gantry.Metrics{}, fmt.Errorf("keep the metric series: %w", err)
			}
			m := reader.Metrics()
			m.AccuracyError = clip(m.AccuracyError, maxReason)
			return exit, m, nil
		}
		if tctx.Err() != nil {
			if ctx.Err() == nil || errors.Is(context.Cause(ctx), errCanceled) {
				// Timed out or canceled: stop it now. (On shutdown it runs on.)
				d.engine.Stop(context.WithoutCancel(ctx), j.ContainerID, d.cfg.StopTimeout)
			}
			return runner.Exit{}, gantry.Metrics{}, phaseErr(ctx, tctx, err)
		}
		if !errors.Is(err, gantry.ErrUnavailable) {
			return runner.Exit{}, gantry.Metrics{}, err
		}
		logf.Linef("==> lost the Docker engine (%v); waiting for it", err)
		if err := d.waitEngine(tctx); err != nil {
			return runner.Exit{}, gantry.Metrics{}, phaseErr(ctx, tctx, err)
		}
		st, err := d.engine.State(tctx, j.ContainerID)
		if errors.Is(err, gantry.ErrNotFound) {
			return runner.Exit{}, gantry.Metrics{}, errors.New("the training container disappeared while the Docker engine was away")
		}
		if err != nil {
			return runner.Exit{}, gantry.Metrics{}, err
		}
		switch {
		case st.Running:
			logf.Linef("==> the container survived; re-attached")
		case st.ExitCode == 0:
			// It finished by itself meanwhile: collect its log and result.
			logf.Linef("==> the container finished meanwhile; collecting its output")
		default:
			return runner.Exit{}, gantry.Metrics{}, fmt.Errorf("the Docker engine restarted while training ran: the container ended with exit code %d", st.ExitCode)
		}
	}
}

// placed returns the watch that records where job id's training is placed,
// each time that changes, and says so in its log.
func (d *Daemon) placed(ctx context.Context, id string, logf *jobLog) runner.Watch {
	var last gantry.Placement
	return func(p gantry.Placement) {
		if p == last {
			return
		}
		last = p
		switch {
		case p.Waiting != "":
			logf.Linef("==> waiting for a node: %s", p.Waiting)
		case p.NodeID != "":
			logf.Linef("==> training on node %s (%s), task %.12s", p.Node, p.NodeID, p.Task)
		}
		_, err := d.store.Update(ctx, id, func(j *gantry.Job) error {
			j.Placement = &p
			return nil
		})
		if err != nil {
			d.log.Warn("record the placement", "job", id, "err", err)
		}
	}
}

// waitEngine waits until the engine answers again.
func (d *Daemon) waitEngine(ctx context.Context) error {
	for {
		if err := d.engine.Ping(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
