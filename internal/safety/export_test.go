package safety

import "time"

// Poll is one look of Watch at path, for tests that drive the watcher step
// by step.
func (k *Kernel) Poll(path string) { k.poll(path) }

// SetClock replaces the clock Watch measures SettleTime with.
func (k *Kernel) SetClock(now func() time.Time) {
	k.loadMu.Lock()
	k.now = now
	k.loadMu.Unlock()
}
