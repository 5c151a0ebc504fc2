//go:build race

package systest

// raceEnabled: this test binary is race-enabled, so the binaries under test
// are built with -race too (see Binaries).
const raceEnabled = true
