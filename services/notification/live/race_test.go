//go:build race

package live_test

// raceEnabled is true when the race detector runs, which multiplies memory
// use and so makes the memory measurement meaningless.
const raceEnabled = true
