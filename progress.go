package gantry

// Progress is a typed record of a push under way, the way moby's
// jsonmessage carries one: which reference, how many bytes of how many have
// gone, and once it is pushed, the digest the registry serves. Programs draw
// from it (gantry's push bar); people read the job's log.
type Progress struct {
	Ref     string `json:"ref"`
	Current int64  `json:"current"`
	Total   int64  `json:"total"`
	// Digest is set on the last record of a reference: it is pushed.
	Digest string `json:"digest,omitempty"`
}

// Reporter takes what a long step says as it goes: lines for people, and
// typed progress for programs.
type Reporter interface {
	Linef(format string, args ...any)
	Progress(p Progress)
}

// Discard is a Reporter that takes nothing.
var Discard Reporter = discard{}

type discard struct{}

func (discard) Linef(string, ...any) {}
func (discard) Progress(Progress)    {}
