//go:build race

package hub_test

// raceOn reports whether the race detector is on: its instrumentation
// allocates now and then, so allocation counts are not exact.
const raceOn = true
