// Package trainer is the contract between gantry and a training program, and
// the reference program that honours it.
//
// # What the program is given
//
// gantryd runs the job's image once, as its training container, with the
// image's entrypoint and command (or, when the job gives one with
// `gantry submit DIR -- CMD ARGS`, that command in place of the image's, as
// `docker run IMAGE CMD ARGS` does: with an ENTRYPOINT the words become its
// arguments). The container gets:
//
//   - GANTRY_OUTPUT_DIR, the output directory (/output unless the job says
//     --output): the one place whose contents outlive the container. It is
//     the first variable of the environment; a job cannot set it otherwise.
//   - The job's --env KEY=VALUE variables, which its record shows.
//   - The job's --secret-env variables, whose values come from the
//     submitting user's environment; gantryd records their names only, and
//     holds the values in memory until the container is created.
//   - The job's datasets (--dataset SRC:DST), mounted read-only at DST: a
//     named volume, or a host directory under one of the roots the operator
//     allows (gantryd --dataset-root). The record pins each by a digest of
//     its tree.
//   - GPUs when the job asks (--gpus, as docker run takes it) and the
//     operator allows it (gantryd --allow-gpus); an engine without a GPU
//     runtime fails the job at once. /dev/shm of the job's --shm-size.
//   - No network, no capabilities, no-new-privileges, a pids limit and the
//     job's memory and CPU limits, unless the operator's policy lets the job
//     relax them.
//
// # What gantry reads back
//
//   - The accuracy: the program prints it as a line of its output, by
//     default in the form "accuracy: 0.95" (or "Model accuracy = 95%"), and
//     the last such line is the one that counts. A job may give its own
//     pattern instead; see Compile. Reader reads the output as it streams.
//   - Named metrics (loss, F1, ...), each a series of points: see Metrics
//     below.
//   - The exit code: anything but 0 fails the job, whatever accuracy was
//     printed.
//   - The files left in the output directory: once the container has exited,
//     however it exited (a non-zero code, the OOM killer, a timeout), gantryd
//     copies the directory out through the engine, up to the job's
//     --max-output, and keeps each regular file by its digest. A checkpoint
//     written before a crash is kept too. `gantry outputs ID` gives them back.
//
// # Metrics
//
// Besides the accuracy, a program reports any named metric, a point at a
// time, two ways. A job's --metric NAME=REGEX patterns: each line a pattern
// matches is a point, its one capture group the value. And the structured
// line, a line of output that starts with gantry.MetricLine:
//
//	@@gantry metric {"name":"loss","value":0.31,"step":3}
//
// name as gantry.CheckMetricName allows, value a finite JSON number, step a
// whole number >= 0, optional (without it, the point's step is the number of
// that metric's points before it); no other key. A line named "accuracy"
// reports the accuracy. `gantry init` writes gantry_metrics.py beside app.py,
// whose log_metric(name, value, step=None) prints the line.
//
// The last point of a metric is its final value, in the job's record; a
// malformed line (not JSON, an unknown key, NaN or Infinity, a bad name) is a
// problem the record lists ("line 1234: ..."), never a failure. A job keeps
// gantry.MaxMetrics metrics, each series downsampled to
// gantry.MaxSeriesPoints points (see Reader), beside the record: `gantry
// metrics ID` prints them.
//
// # What ships
//
// When the job passes its gate and pushes, --outputs says how the files go
// with the image:
//
//   - layer (the default): the pushed image is the built image plus one
//     layer holding the output directory at the same path, with
//     GANTRY_OUTPUT_DIR set in its config, so `docker run` of the pushed
//     image finds the model where training wrote it.
//   - artifact: the built image unchanged, and an OCI artifact of type
//     application/vnd.gantry.outputs.v1 (gantry.OutputsType), one layer per
//     file, whose subject is the image's digest.
//   - none: the built image unchanged, and no outputs.
//
// The job's provenance record names the outputs' digests and both manifest
// digests: the image as built and the image as shipped.
//
// # The reference program
//
// The scikit-learn Iris trainer that `gantry init` writes out with Write:
// app.py, requirements.txt, a Dockerfile, a .dockerignore and the metrics
// helper gantry_metrics.py. app.py trains,
// prints "Model accuracy: 0.9667", and saves model.joblib in
// $GANTRY_OUTPUT_DIR; `app.py --evaluate` trains nothing, loads that model
// and prints its accuracy on the same held-out samples, or exits 1 saying
// that there is no model. The Dockerfile runs app.py as its ENTRYPOINT, so
// that `docker run IMAGE --evaluate` of the pushed image prints the accuracy
// that passed the gate.
package trainer
