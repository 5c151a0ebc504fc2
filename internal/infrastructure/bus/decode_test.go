package bus_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

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
