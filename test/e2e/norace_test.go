//go:build !race

package e2e

// raceEnabled: the test binary is not race-enabled (see race_test.go).
const raceEnabled = false
