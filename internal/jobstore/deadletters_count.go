package jobstore

import "context"

// Count returns how many jobs the queue holds.
func (d *MemoryDeadLetters) Count(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byID), nil
}
