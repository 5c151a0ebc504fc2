//go:build race

package fault

// raceEnabled: the test binary is race-enabled, so the binaries under test are
// built with -race too (see buildBinaries).
const raceEnabled = true
