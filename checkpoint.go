package gantry

import "slices"

// Checkpoint is the last step of a job's run whose outcome the record holds.
// Each step commits its outcome with its checkpoint before the next side
// effect starts, so a run resumed after a restart goes on from the step
// after it.
type Checkpoint string

// The checkpoints, in the order a run reaches them.
const (
	// CheckpointBuilt: the image is built; Image and Inputs.Bases hold it.
	CheckpointBuilt Checkpoint = "built"
	// CheckpointCreated: the training container exists (ContainerID), and
	// TrainLogOffset says where its output starts in the job's log.
	CheckpointCreated Checkpoint = "created"
	// CheckpointExited: training ended; ExitCode and Metrics hold how.
	CheckpointExited Checkpoint = "exited"
	// CheckpointGated: the gate's verdict is in (GatePassed, Error).
	CheckpointGated Checkpoint = "gated"
	// CheckpointPublished: the image is pushed where the job asked.
	CheckpointPublished Checkpoint = "published"
)

// checkpoints lists them in order; "" is the start, before any.
var checkpoints = []Checkpoint{"", CheckpointBuilt, CheckpointCreated, CheckpointExited, CheckpointGated, CheckpointPublished}

// Reached reports whether the job's run has passed checkpoint c. A record
// from a gantryd that kept no checkpoints is read from its fields.
func (j *Job) Reached(c Checkpoint) bool {
	return slices.Index(checkpoints, j.checkpoint()) >= slices.Index(checkpoints, c)
}

func (j *Job) checkpoint() Checkpoint {
	switch {
	case j.Checkpoint != "":
		return j.Checkpoint
	case j.State == StateSucceeded:
		return CheckpointPublished
	case j.State == StatePushing || j.State == StateRejected:
		return CheckpointGated
	case j.ExitCode != nil:
		return CheckpointExited
	case j.ContainerID != "":
		return CheckpointCreated
	case j.Image != "":
		return CheckpointBuilt
	}
	return ""
}
