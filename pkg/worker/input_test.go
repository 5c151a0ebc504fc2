package worker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cortex-os/core/pkg/blob"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

// Job.Input outside a worker: the payload first, else a data: context_ptr;
// an obj:// one needs a worker's store; other schemes are ErrUnsupported.
func TestJobInputOutsideWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		req  *pb.JobRequest
		want string
		err  error
	}{
		{&pb.JobRequest{Payload: []byte("p"), ContextPtr: "data:,x"}, "p", nil},
		{&pb.JobRequest{ContextPtr: blob.DataURL([]byte("inline"), "")}, "inline", nil},
		{&pb.JobRequest{}, "", nil},
		{&pb.JobRequest{ContextPtr: "memory://echo/1"}, "", blob.ErrUnsupported},
		{&pb.JobRequest{ContextPtr: "data:;base64,!!"}, "", blob.ErrBadPointer},
	} {
		got, err := worker.NewJob(tc.req).Input(ctx)
		if string(got) != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Input of %v = %q, %v", tc.req, got, err)
		}
	}
	if _, err := worker.NewJob(&pb.JobRequest{ContextPtr: "obj://CORTEX_BLOBS/k"}).Input(ctx); err == nil {
		t.Error("obj:// read without a store")
	}
}
