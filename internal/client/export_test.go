package client

import "time"

// SetWatchPollTimeout sets the bound of each of Watch's queries for a test
// and returns a function that restores it.
func SetWatchPollTimeout(d time.Duration) (restore func()) {
	old := watchPollTimeout
	watchPollTimeout = d
	return func() { watchPollTimeout = old }
}
