package pyworker

import (
	"context"
	"testing"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// FuzzSource: whatever a job's payload and context_ptr hold, finding its
// source returns it or an error, and never panics.
func FuzzSource(f *testing.F) {
	for _, seed := range []struct {
		payload []byte
		ptr     string
	}{
		{[]byte("print(1)"), ""},
		{nil, "data:text/x-python;base64,cHJpbnQoMSk="},
		{nil, "data:,print(1)%0A"},
		{nil, "data:text/x-python;base64,!!"},
		{nil, "data:no-comma"},
		{nil, "data:,%zz"},
		{nil, "obj://CORTEX_BLOBS/code.py"},
		{nil, "obj://"},
		{nil, "obj:///key"},
		{nil, "s3://b/k"},
		{nil, ""},
	} {
		f.Add(seed.payload, seed.ptr)
	}
	h := &Handler{}
	f.Fuzz(func(t *testing.T, payload []byte, ptr string) {
		src, err := h.source(context.Background(), &pb.JobRequest{Payload: payload, ContextPtr: ptr})
		if err == nil && len(src) > MaxSource {
			t.Fatalf("source of %d bytes accepted", len(src))
		}
		if len(payload) > 0 && err == nil && string(src) != string(payload) {
			t.Fatal("the payload is not the source")
		}
	})
}
