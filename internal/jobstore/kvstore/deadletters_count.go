package kvstore

import (
	"context"
	"fmt"
)

// Count returns how many jobs the dead-letter stream holds, from the
// stream's state (one request, no message read): one message per job.
func (d *DeadLetters) Count(ctx context.Context) (int, error) {
	info, err := d.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("kvstore: count dead letters: %w", err)
	}
	return int(info.State.Msgs), nil
}
