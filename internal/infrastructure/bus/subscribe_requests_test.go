package bus_test

import (
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protopack"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// SubscribeRequests hands its handler what SubscribeWithReply would (the
// packet Decode makes of the data, and the reply subject), refuses what it
// refuses, and a JobRequest the handler keeps outlives the pooled packet
// around it.
func TestSubscribeRequestsMatchesDecodeAndKeepsRequests(t *testing.T) {
	t.Parallel()
	nc, err := nats.Connect(natstest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b := bus.FromConn(nc, bus.Config{})
	defer b.Close()

	type got struct {
		packet *pb.BusPacket // a copy, made in the handler
		req    *pb.JobRequest
		reply  string
	}
	var (
		mu   sync.Mutex
		gots []got
	)
	drain, err := b.SubscribeRequests("t.jobs", "q", func(p *pb.BusPacket, reply string) {
		mu.Lock()
		defer mu.Unlock()
		gots = append(gots, got{proto.Clone(p).(*pb.BusPacket), p.GetJobRequest(), reply})
	})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, b)

	marshal := func(p *pb.BusPacket) []byte {
		data, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	badUTF8 := protopack.Message{
		protopack.Tag{Number: 1, Type: protopack.BytesType}, protopack.String("trace"),
		protopack.Tag{Number: 10, Type: protopack.BytesType}, protopack.LengthPrefix{
			protopack.Tag{Number: 1, Type: protopack.BytesType}, protopack.Bytes([]byte{'j', 0xff}),
		},
	}.Marshal()
	sent := [][]byte{
		marshal(wire.JobRequestPacket("tr-1", "s", &pb.JobRequest{JobId: "job-1", Topic: "job.x", Attempt: 2, RequiredLabels: map[string]string{"a": "b"}})),
		marshal(wire.JobRequestPacket("", "s", &pb.JobRequest{Topic: "job.x"})), // no job id: decoded the careful way
		marshal(&pb.BusPacket{TraceId: "tr-3", Payload: &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "job-3"}}}),
		marshal(wire.JobRequestPacket("tr-4", "s", &pb.JobRequest{JobId: "job-4"})),
	}
	refused := [][]byte{{0xff, 0xff, 0xff}, badUTF8, marshal(&pb.BusPacket{TraceId: "no payload"})}
	for i, data := range sent {
		if i == 1 {
			for _, r := range refused {
				if err := nc.Publish("t.jobs", r); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := nc.PublishMsg(&nats.Msg{Subject: "t.jobs", Reply: "reply." + string(rune('a'+i)), Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := drain(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(gots) != len(sent) {
		t.Fatalf("handler got %d packets, want %d", len(gots), len(sent))
	}
	for i, data := range sent {
		want, err := bus.Decode(data, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(gots[i].packet, want) {
			t.Errorf("packet %d = %v, want %v", i, gots[i].packet, want)
		}
		if r := "reply." + string(rune('a'+i)); gots[i].reply != r {
			t.Errorf("packet %d: reply %q, want %q", i, gots[i].reply, r)
		}
		if want.GetJobRequest() != nil && !proto.Equal(gots[i].req, want.GetJobRequest()) {
			t.Errorf("packet %d: the kept JobRequest became %v, want %v", i, gots[i].req, want.GetJobRequest())
		}
	}
	if s := b.Stats(); s.Malformed != 2 || s.UnknownPayload != 1 {
		t.Errorf("stats %+v, want 2 malformed and 1 unknown payload", s)
	}
}
