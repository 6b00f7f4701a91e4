//go:build race

package trainer

// raceEnabled: the race detector changes what allocates.
const raceEnabled = true
