//go:build !race

package systest

// raceEnabled: this test binary is not race-enabled (see race.go).
const raceEnabled = false
