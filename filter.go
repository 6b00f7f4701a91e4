package gantry

import "fmt"

// JobFilter selects a page of jobs, newest first: what gantry ls, the API's
// GET /v1/jobs and the store's List take.
type JobFilter struct {
	// Limit is the most jobs to return: 100 when zero or less, at most 1000.
	Limit int
	// Before, when set, is the cursor from the previous page: only jobs with
	// a lower ID (submitted earlier) are listed.
	Before string
	// States, when not empty, lists only jobs in one of these states.
	States []State
}

// HumanBytes writes n for people reading progress: "304.1 MB", "2.00 GB".
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmtUnit(n, 1<<30, "%.2f GB")
	case n >= 1<<20:
		return fmtUnit(n, 1<<20, "%.1f MB")
	case n >= 1<<10:
		return fmtUnit(n, 1<<10, "%.1f kB")
	}
	return fmtUnit(n, 1, "%.0f B")
}

func fmtUnit(n, unit int64, format string) string {
	return fmt.Sprintf(format, float64(n)/float64(unit))
}
