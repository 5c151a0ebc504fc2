package kvstore

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// FuzzDecodeRecord: whatever bytes a bucket holds under a key, decode
// returns a job or an error and never panics; a job it returns prints, and
// encodes back to the same job. Where protobuf-go reads the bytes too, it
// reads the same job. (The two differ only on malformed bytes no encoder
// writes: a known field with the wrong wire type, refused here; a broken
// unknown field inside a map entry, skipped here.)
func FuzzDecodeRecord(f *testing.F) {
	job := &pb.JobInfo{JobId: "j1", State: pb.JobState_JOB_STATE_PENDING, Attempt: 1, TraceId: "t",
		Request: &pb.JobRequest{JobId: "j1", Topic: "job.echo", Payload: []byte("x"), RequiredLabels: map[string]string{"a": "b"}}}
	good, err := proto.Marshal(job)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0xff, 0xfe})                // job_id not UTF-8
	f.Add(append(append([]byte{}, good...), 0x0b, 0x0c)) // a group that never ends
	s := &Store{bucket: "FUZZ"}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := s.decode("j1", data)
		if err != nil {
			return
		}
		_ = got.String()
		if ref := new(pb.JobInfo); proto.Unmarshal(data, ref) == nil && !proto.Equal(got, ref) {
			t.Fatalf("decode = %v, protobuf-go = %v", got, ref)
		}
		again, err := encode(got)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		back, err := s.decode("j1", again)
		if err != nil || !proto.Equal(back, got) {
			t.Fatalf("encode/decode round trip: %v, %v", back, err)
		}
	})
}
