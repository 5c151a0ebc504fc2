package bus_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

func mustMarshal(t testing.TB, p *pb.BusPacket) []byte {
	t.Helper()
	data, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDecode(t *testing.T) {
	t.Parallel()
	valid := mustMarshal(t, jobPacket("j"))
	for _, tc := range []struct {
		name    string
		data    []byte
		max     int
		wantErr error
	}{
		{"valid", valid, 0, nil},
		{"valid at the limit", valid, len(valid), nil},
		{"one byte over the limit", valid, len(valid) - 1, bus.ErrTooLarge},
		{"nil", nil, 0, bus.ErrUnknownPayload},
		{"empty", []byte{}, 0, bus.ErrUnknownPayload},
		{"envelope without payload", mustMarshal(t, wire.NewPacket("t", "s")), 0, bus.ErrUnknownPayload},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0, bus.ErrMalformed},
		{"truncated", valid[:len(valid)-1], 0, bus.ErrMalformed},
		{"invalid utf-8 in a string", []byte{0x0a, 0x01, 0xff}, 0, bus.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := bus.Decode(tc.data, tc.max)
			if tc.wantErr == nil {
				if err != nil || p.GetJobRequest().GetJobId() != "j" {
					t.Fatalf("Decode = %v, %v", p, err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || p != nil {
				t.Fatalf("Decode = %v, %v; want nil, %v", p, err, tc.wantErr)
			}
		})
	}
}

// FuzzDecode: Decode never panics; whatever it accepts has a payload and
// marshals again to a packet that decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add(mustMarshal(f, jobPacket("seed")))
	f.Add(mustMarshal(f, wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j", Status: pb.JobStatus_JOB_STATUS_COMPLETED})))
	f.Add(mustMarshal(f, wire.HeartbeatPacket("t", "w", &pb.Heartbeat{WorkerId: "w", Capabilities: []string{"echo"}})))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := bus.Decode(data, bus.DefaultMaxPacketBytes)
		if err != nil {
			if p != nil {
				t.Fatalf("Decode returned a packet with error %v", err)
			}
			if !errors.Is(err, bus.ErrMalformed) && !errors.Is(err, bus.ErrTooLarge) && !errors.Is(err, bus.ErrUnknownPayload) {
				t.Fatalf("Decode error %v is none of the bus errors", err)
			}
			return
		}
		if p == nil || p.Payload == nil {
			t.Fatalf("Decode succeeded without a payload: %v", p)
		}
		again, err := proto.Marshal(p)
		if err != nil {
			t.Fatalf("a decoded packet does not marshal: %v", err)
		}
		p2, err := bus.Decode(again, 0)
		if err != nil {
			t.Fatalf("re-marshalled packet does not decode: %v", err)
		}
		if !proto.Equal(p, p2) {
			t.Fatalf("re-decoded packet differs:\n%v\n%v", p, p2)
		}
	})
}

// FuzzDecodeMatchesProtobuf: Decode (vtprotobuf's UnmarshalVT and the
// generated CheckDecoded) accepts what protobuf-go's Unmarshal accepts, and
// decodes it to the same message; it refuses, in addition, known fields sent
// with the wrong wire type; and what it accepts is always valid for
// protobuf-go.
func FuzzDecodeMatchesProtobuf(f *testing.F) {
	f.Add(mustMarshal(f, jobPacket("seed")))
	f.Add(mustMarshal(f, wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j", Error: "e"})))
	f.Add(mustMarshal(f, wire.HeartbeatPacket("t", "w", &pb.Heartbeat{WorkerId: "w", Labels: map[string]string{"gpu": "h100"}})))
	answer := wire.NewPacket("t", "s")
	answer.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Jobs: []*pb.JobInfo{{JobId: "j", Request: &pb.JobRequest{EnvVars: map[string]string{"k": "v"}}}}}}
	f.Add(mustMarshal(f, answer))
	bad := jobPacket("bad")
	bad.GetJobRequest().RequiredLabels = map[string]string{"k": "\xff"}
	f.Add(mustMarshalPartial(f, bad))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ref pb.BusPacket
		refErr := proto.Unmarshal(data, &ref)
		p, err := bus.Decode(data, 0)
		if refErr == nil && err == nil {
			// Unknown fields may be kept byte for byte differently (and
			// vtprotobuf's Timestamp drops them): compare the known ones.
			dropUnknown(ref.ProtoReflect())
			dropUnknown(p.ProtoReflect())
		}
		switch {
		case refErr == nil && err != nil && strings.Contains(err.Error(), "wrong wireType"):
			// Stricter on purpose: protobuf-go keeps a known field sent with
			// another wire type as an unknown field; no version of the
			// contract changes a field's type, so Decode refuses it.
		case refErr == nil && err != nil && !errors.Is(err, bus.ErrUnknownPayload):
			t.Fatalf("Decode refused what protobuf-go accepts: %v", err)
		case refErr == nil && err == nil && !proto.Equal(&ref, p):
			t.Fatalf("Decode and protobuf-go disagree:\n%v\n%v", p, &ref)
		case err == nil:
			// Whatever Decode accepts is valid for protobuf-go downstream
			// (the job store marshals it; logs print it). It may accept
			// bytes protobuf-go refuses only where the refused part does
			// not survive decoding (a string sent twice, the first one
			// invalid UTF-8).
			_ = fmt.Sprint(p)
			again, merr := proto.Marshal(p)
			if merr != nil {
				t.Fatalf("a decoded packet does not marshal with protobuf-go: %v", merr)
			}
			var q pb.BusPacket
			if uerr := proto.Unmarshal(again, &q); uerr != nil || !proto.Equal(p, &q) {
				t.Fatalf("a decoded packet does not round-trip through protobuf-go: %v", uerr)
			}
		}
	})
}

func mustMarshalPartial(f *testing.F, p *pb.BusPacket) []byte {
	f.Helper()
	data, err := p.MarshalVT() // writes invalid UTF-8 as it is, like a hostile sender
	if err != nil {
		f.Fatal(err)
	}
	return data
}

func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				dropUnknown(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				dropUnknown(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			dropUnknown(v.Message())
		}
		return true
	})
}

// FuzzDecodeTransientMatchesDecode holds the pooled decode of submissions
// and results (what Consume and ConsumeTree hand the scheduler) to Decode:
// the same packet or the same error, for any bytes, including packets with
// no time stamp, two payloads, or one payload followed by another. Each
// packet is decoded twice in a row so that a pooled one is reused, and a
// JobRequest from the first decode, which a handler may keep, must not
// change.
func FuzzDecodeTransientMatchesDecode(f *testing.F) {
	res := wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j", Status: pb.JobStatus_JOB_STATUS_COMPLETED, ResultPtr: "memory://echo/j", Attempt: 2})
	f.Add(mustMarshal(f, res))
	bare := wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j"})
	bare.CreatedAt = nil
	f.Add(mustMarshal(f, bare))
	f.Add(append(mustMarshal(f, res), mustMarshal(f, wire.JobResultPacket("t2", "w2", &pb.JobResult{JobId: "k", Error: "e"}))...))
	f.Add(append(mustMarshal(f, res), mustMarshal(f, jobPacket("after"))...))
	f.Add(append(mustMarshal(f, jobPacket("before")), mustMarshal(f, res)...))
	f.Add(mustMarshal(f, jobPacket("request")))
	f.Add(append(mustMarshal(f, jobPacket("a")), mustMarshal(f, jobPacket("b"))...))
	f.Add(mustMarshal(f, res)[:7])
	f.Add([]byte{0x5a, 0x03, 0x0a, 0x01, 0xff}) // job_result with a job_id that is not UTF-8
	f.Add([]byte{})
	f.Add([]byte{0x5a, 0x00})                               // an empty job_result
	f.Add([]byte{0x52, 0x00})                               // an empty job_request
	f.Add([]byte{0x1a, 0x00, 0x5a, 0x03, 0x0a, 0x01, 0x6a}) // a zero created_at, then a result
	// The subject says which payload to expect (set in place before the
	// pass); a packet with another, or with none, must come out the same.
	subjects := []string{"sys.job.submit", "sys.job.result", "sys.job.result.worker-1", "sys.job.other"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var kept, keptCopy *pb.JobRequest // a handler may keep the request
		for i := range 2 * len(subjects) {
			subject := subjects[i/2]
			want, wantErr := bus.Decode(data, 1<<20)
			got, release, err := bus.DecodeTransient(data, 1<<20, subject)
			if kept != nil && !proto.Equal(kept, keptCopy) {
				t.Fatalf("a kept JobRequest changed with the next decode:\n%v\n%v", kept, keptCopy)
			}
			switch {
			case (err == nil) != (wantErr == nil):
				t.Fatalf("on %s: DecodeTransient err %v, Decode err %v", subject, err, wantErr)
			case err != nil:
				for _, sentinel := range []error{bus.ErrTooLarge, bus.ErrMalformed, bus.ErrUnknownPayload} {
					if errors.Is(err, sentinel) != errors.Is(wantErr, sentinel) {
						t.Fatalf("on %s: DecodeTransient err %v, Decode err %v", subject, err, wantErr)
					}
				}
			case !proto.Equal(got, want):
				t.Fatalf("on %s: DecodeTransient and Decode disagree:\n%v\n%v", subject, got, want)
			case (got.GetCreatedAt() == nil) != (want.GetCreatedAt() == nil):
				t.Fatalf("on %s: created_at present %v, Decode %v", subject, got.GetCreatedAt() != nil, want.GetCreatedAt() != nil)
			}
			if r := got.GetJobRequest(); r != nil {
				kept, keptCopy = r, proto.CloneOf(r)
			}
			release.Release()
		}
	})
}
