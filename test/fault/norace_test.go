//go:build !race

package fault

// raceEnabled: the test binary is not race-enabled (see race_test.go).
const raceEnabled = false
