package client

import "time"

// SetWatchTimings sets how often Watch polls and how long it waits for an
// event, for a test that must not run in parallel; restore puts them back.
func SetWatchTimings(poll, silence time.Duration) (restore func()) {
	p, s := watchInterval, eventSilence
	watchInterval, eventSilence = poll, silence
	return func() { watchInterval, eventSilence = p, s }
}

// SetFollowInterval sets how often a follower announces itself again, for
// a test that must not run in parallel; restore puts it back.
func SetFollowInterval(d time.Duration) (restore func()) {
	old := followInterval
	followInterval = d
	return func() { followInterval = old }
}

// SetSubmitPatience sets how long Submit waits for an answer before it
// publishes a submission again plainly, for a test that must not run in
// parallel; restore puts it back.
func SetSubmitPatience(d time.Duration) (restore func()) {
	p := submitPatience
	submitPatience = d
	return func() { submitPatience = p }
}

// NextAsk is nextAsk: how long Watch waits before it asks again.
var NextAsk = nextAsk
