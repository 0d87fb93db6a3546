//go:build race

package hub_test

// raceOn reports whether the race detector is on: its instrumentation
// allocates now and then, so allocation counts wobble by one.
const raceOn = true
