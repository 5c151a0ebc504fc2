package system

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A peer's failure to make a stream's store while a new cluster settles
// (10049) is tried again, wrapped or not; a refusal of the request is not.
func TestRetryCreateRetriesAStoreFailure(t *testing.T) {
	t.Parallel()
	storeFailed := fmt.Errorf("kvstore: bucket X: %w", &jetstream.APIError{Code: 500, ErrorCode: jsErrStreamCreate, Description: "error creating store for stream"})
	tries := 0
	err := retryCreate(context.Background(), func(context.Context) error {
		if tries++; tries < 3 {
			return storeFailed
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("err %v after %d tries; want nil after 3", err, tries)
	}
	bad := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeBadRequest, Description: "bad request"}
	tries = 0
	if err := retryCreate(context.Background(), func(context.Context) error { tries++; return bad }); err == nil || tries != 1 {
		t.Fatalf("a bad request: err %v after %d tries; want it at once", err, tries)
	}
}
