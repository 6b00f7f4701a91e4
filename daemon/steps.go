package daemon

// The steps of one run, in order. Each records its outcome, with the
// checkpoint it reaches, before the next side effect starts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/builder"
	"github.com/gantry-ml/gantry/runner"
)

// jobRun is one run of one job: what its steps share.
type jobRun struct {
	d   *Daemon
	j   *gantry.Job // the record as the last step left it
	log *jobLog
	// upload sends the image's blobs to the registries while training runs,
	// so that a push after the gate costs only the manifests.
	upload *earlyUpload
}

func (r *jobRun) say(format string, args ...any) { r.log.Linef("==> "+format, args...) }

// build builds the job's image from its context and records it: checkpoint
// built.
func (r *jobRun) build(ctx context.Context) error {
	if r.j.Sweep != "" {
		return r.buildShared(ctx) // once for every point (sweeprun.go)
	}
	if err := r.buildIn(ctx, r.d.contextDir(r.j.ID)); err != nil {
		return err
	}
	os.RemoveAll(r.d.contextDir(r.j.ID))
	r.say("built image %s", r.j.Image)
	return nil
}

// buildIn builds the job's image from the context in dir and records it.
func (r *jobRun) buildIn(ctx context.Context, dir string) error {
	d, id := r.d, r.j.ID
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("the build context is gone (%v): submit the job again", err)
	}
	if err := d.secretsKept(r.j); err != nil {
		return err // fail before building what could not run
	}
	bsecrets, err := d.buildSecretsOf(r.j) // buildsecrets.go
	if err != nil {
		return err
	}
	status, err := os.Create(d.StatusPath(id))
	if err != nil {
		return err
	}
	tr := newTrace()
	bctx, cancel := withLimit(ctx, "build", r.j.Spec.Timeouts.Build)
	r.say("building %s (Dockerfile %s)", r.j.ImageName, r.j.Spec.Build.Dockerfile)
	res, err := d.builder.Build(bctx, builder.Request{
		ContextDir: dir,
		Spec:       r.j.Spec.Build,
		Name:       r.j.ImageName,
		Secrets:    bsecrets,
		CacheRef:   d.cfg.BuildCache,
		Stage:      d.buildStage(),
		Status:     d.notifying(status, d.StatusPath(id)),
	}, r.log.Output())
	status.Close()
	tr.mark("solved")
	d.builtWithSecrets(ctx, r.j)
	if err != nil {
		cancel()
		return phaseErr(ctx, bctx, err)
	}
	defer cancel()
	image, err := r.stage(bctx, res.ImageID)
	if err != nil {
		return phaseErr(ctx, bctx, err)
	}
	tr.mark("staged")
	bases := d.resolveBases(ctx, res.Bases)
	tr.mark("bases")
	if r.j, err = d.store.Update(ctx, id, func(j *gantry.Job) error {
		j.Image = image
		j.Inputs.Bases = bases
		j.Checkpoint = gantry.CheckpointBuilt
		return nil
	}); err != nil {
		return err
	}
	tr.mark("recorded")
	d.log.Debug("build trace", append([]any{"job", id}, tr.attrs()...)...)
	return nil
}

// create creates the training container and records it, with where its
// output will start in the log, as the job moves to running: checkpoint
// created. A container a crash left before the record has the job's name:
// it is removed first. The job's datasets are pinned before (datasets.go),
// and its --secret-env values, handed to the engine, are forgotten after.
func (r *jobRun) create(ctx context.Context) error {
	if err := r.pinDatasets(ctx); err != nil {
		return err
	}
	d, j := r.d, r.j
	if err := d.engine.Remove(ctx, containerName(j.ID)); err != nil {
		return err
	}
	res, run := j.Spec.Resources, j.Spec.Run
	env, err := d.containerEnv(j)
	if err != nil {
		return err
	}
	gpus, _ := gantry.ParseGPUs(run.GPUs) // checked at submit
	cid, err := d.engine.Create(ctx, runner.Spec{
		Image:     j.Image,
		Name:      containerName(j.ID),
		Labels:    d.labels(j.ID),
		Memory:    res.Memory,
		NanoCPUs:  int64(res.CPUs * 1e9),
		PidsLimit: res.PidsLimit,
		Network:   j.Spec.Sandbox.Network,
		CapAdd:    j.Spec.Sandbox.CapAdd,
		LogBytes:  d.logCap(j),
		Cmd:       run.Cmd,
		Env:       env,
		Mounts:    d.datasetMounts(j),
		GPUs:      gpus,
		ShmSize:   run.ShmSize,
		// Placement, and the grace a backend fixes at creation.
		Constraints: run.Constraints,
		StopGrace:   d.cfg.StopTimeout,
	})
	if err != nil {
		return err
	}
	r.log.Linef("%s", trainingLine(cid))
	offset, err := r.log.Size()
	if err == nil {
		created := func(j *gantry.Job) {
			j.ContainerID, j.TrainLogOffset, j.Checkpoint = cid, offset, gantry.CheckpointCreated
			j.Placement = &gantry.Placement{Backend: d.engine.Name()}
		}
		if j.State == gantry.StateRunning { // a retry (retry)
			r.j, err = d.store.Update(ctx, j.ID, func(j *gantry.Job) error { created(j); return nil })
		} else {
			r.j, err = d.move(ctx, j.ID, gantry.StateRunning, created)
		}
	}
	if err != nil {
		d.engine.Remove(context.WithoutCancel(ctx), cid)
		return err
	}
	if j.Spec.Run.Retries == 0 {
		d.secrets.forget(j.ID) // the engine holds them now (a retry needs them again)
	}
	return nil
}

// retry records a run the infrastructure lost (why) as an attempt, removes
// what is left of it, and creates the run again: checkpoint created. It
// returns the loss, as the job's failure, once the job's retries are spent.
func (r *jobRun) retry(ctx context.Context, why string) error {
	d, j := r.d, r.j
	if len(j.Attempts) >= j.Spec.Run.Retries {
		return fmt.Errorf("node lost: %s (the training did not fail: submit with --retries N to try it again when a node is lost)", why)
	}
	if err := d.engine.Remove(ctx, j.ContainerID); err != nil {
		return err
	}
	r.say("the training was lost (%s); trying again (%d of %d)", why, len(j.Attempts)+1, j.Spec.Run.Retries)
	var err error
	r.j, err = d.store.Update(ctx, j.ID, func(j *gantry.Job) error {
		a := gantry.Attempt{Started: j.Times.Run.Started, Ended: d.now(), Reason: why}
		if j.Placement != nil {
			a.Placement = *j.Placement
		}
		j.Attempts = append(j.Attempts, a)
		j.ContainerID, j.Placement, j.Checkpoint = "", nil, gantry.CheckpointBuilt
		return nil
	})
	if err != nil {
		return err
	}
	return r.create(ctx)
}

// train runs the container (or re-attaches to it) until it exits, keeps
// what it left in its output directory, and records how it ended, what it
// reported and its outputs: checkpoint exited, which means the outputs are
// kept. (A gantryd killed before that record re-attaches to the exited
// container when it starts again, and keeps them then.)
func (r *jobRun) train(ctx context.Context) error {
	d, j := r.d, r.j
	if len(j.Spec.Push) > 0 && r.upload == nil { // (a retry keeps its upload)
		r.upload = d.uploadEarly(ctx, j)
	}
	exit, metrics, err := d.train(ctx, j, r.log)
	if err != nil {
		return err
	}
	if exit.Lost != "" {
		if err := r.retry(ctx, exit.Lost); err != nil {
			return err
		}
		return r.train(ctx)
	}
	defer d.holdOutputs()() // no prune until the record lists them (retention_files.go)
	outs, err := d.collectOutputs(ctx, j, r.log)
	if err != nil {
		return err
	}
	r.j, err = d.store.Update(ctx, j.ID, func(j *gantry.Job) error {
		code := exit.Code
		j.ExitCode, j.Metrics, j.Error = &code, metrics, ""
		switch {
		case exit.OOMKilled:
			j.Error = "training was killed: out of memory (OOMKilled)"
		case exit.OOMProbable:
			j.Error = "training was killed (exit code 137): probably out of memory, under a memory limit of " + gantry.FormatBytes(j.Spec.Resources.Memory)
		case exit.Code != 0:
			j.Error = fmt.Sprintf("training exited with code %d", exit.Code)
		}
		if j.Outputs = outs; outs.Error != "" {
			j.Error = strings.TrimPrefix(j.Error+"; "+outs.Error, "; ")
		}
		j.Checkpoint = gantry.CheckpointExited
		return nil
	})
	return err
}

// gate removes the container (the record is complete) and decides, at once: a job
// that failed (or whose outputs could not be kept) ends failed, one below
// its gate rejected, one that pushes nowhere succeeded, and one that pushes
// moves to pushing: checkpoint gated. A job that will not push stops its upload before it ends: once it
// has ended, nothing of it goes on.
func (r *jobRun) gate(ctx context.Context) error {
	d, j := r.d, r.j
	// The container goes while the verdict is made and the output layer
	// built; the gate ends once it is gone.
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		if err := d.engine.Remove(ctx, j.ContainerID); err != nil {
			d.log.Warn("remove container", "job", j.ID, "err", err)
		}
	}()
	defer func() { <-removed }()
	if a := j.Metrics.Accuracy; a != nil {
		r.say("accuracy %.4f", *a)
	} else {
		r.say("accuracy: %s", j.Metrics.AccuracyError)
	}
	if *j.ExitCode != 0 || (j.Outputs != nil && j.Outputs.Error != "") {
		r.upload.stop()
		return errors.New(j.Error)
	}
	v := gantry.Judge(&j.Spec, j.Metrics)
	gated := func(j *gantry.Job) { j.GatePassed, j.Checkpoint = v.Passed, gantry.CheckpointGated }
	var err error
	switch {
	case !v.Passed:
		r.upload.stop()
		r.say("rejected: %s", v.Reason)
		<-removed // an ended job has nothing left
		r.j, err = d.finish(ctx, j.ID, nil, gantry.StateRejected, v.Reason, gated)
	case len(j.Spec.Push) == 0:
		r.upload.stop()
		<-removed
		r.j, err = d.finish(ctx, j.ID, r.log, gantry.StateSucceeded, "", gated)
	default:
		// The output layer is built now, recorded with the verdict, and
		// goes up meanwhile: the push sends manifests only.
		layer, lerr := d.newLayer(ctx, j)
		if lerr != nil {
			r.upload.stop()
			return lerr
		}
		r.j, err = d.move(ctx, j.ID, gantry.StatePushing, func(j *gantry.Job) { gated(j); recordLayer(j, layer) })
		if err == nil && shipsLayer(r.j) {
			r.upload = d.uploadShipped(ctx, r.j, r.upload)
		}
	}
	return err
}

// publish pushes the image where the job asked, as gantry push would:
// checkpoint published, and the job succeeded.
func (r *jobRun) publish(ctx context.Context) error {
	rep := jobReporter{log: r.log}
	path := r.d.ProgressPath(r.j.ID)
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		defer f.Close()
		rep.progress = json.NewEncoder(r.d.notifying(f, path))
	} else {
		r.d.log.Warn("open the push progress file", "job", r.j.ID, "err", err)
	}
	j, prov, err := r.d.publish(ctx, r.j, r.j.Spec.Push, r.upload, rep)
	if err != nil {
		return err
	}
	r.j, err = r.d.finish(ctx, j.ID, r.log, gantry.StateSucceeded, "", func(j *gantry.Job) {
		j.Provenance, j.Checkpoint = prov, gantry.CheckpointPublished
	})
	return err
}

// jobReporter reports a job's publish: lines to its log (as gantryd's own),
// progress records to its progress file, which followers read.
type jobReporter struct {
	log      *jobLog
	progress *json.Encoder
}

func (r jobReporter) Linef(format string, args ...any) { r.log.Linef(format, args...) }

func (r jobReporter) Progress(p gantry.Progress) {
	if r.progress != nil {
		r.progress.Encode(p)
	}
}
