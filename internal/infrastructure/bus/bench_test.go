package bus_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The per-job codec of the bus: see docs/BENCHMARKS.md.
// Run: go test -run '^$' -bench . -benchmem ./internal/infrastructure/bus

// benchPayloads are the --payload sizes of cortex bench measured here, carried
// in context_ptr as the bench does.
var benchPayloads = []int{0, 1024}

func benchRequestPacket(payload int) *pb.BusPacket {
	return wire.JobRequestPacket("bench-s-0123456789", "cortex-scheduler-host-0123abcd", &pb.JobRequest{
		JobId: "bench-s-0123456789", Topic: "job.echo", ContextPtr: strings.Repeat("x", payload),
	})
}

func benchResultPacket() *pb.BusPacket {
	return wire.JobResultPacket("bench-s-0123456789", "worker-echo-host-0123abcd", &pb.JobResult{
		JobId: "bench-s-0123456789", Status: pb.JobStatus_JOB_STATUS_COMPLETED,
		ResultPtr: "memory://echo/bench-s-0123456789", WorkerId: "worker-echo-host-0123abcd",
	})
}

func benchMarshal(b *testing.B, p *pb.BusPacket) []byte {
	b.Helper()
	data, err := proto.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkEncodeJobRequest is what dispatching a job costs in encoding: the
// packet wrapped and stamped (wire.JobRequestPacket), then marshalled as the
// bus does (bus.AppendPacket).
func BenchmarkEncodeJobRequest(b *testing.B) {
	for _, size := range benchPayloads {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			req := benchRequestPacket(size).GetJobRequest()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bus.AppendPacket(nil, wire.JobRequestPacket("bench-s-0123456789", "cortex-scheduler-host-0123abcd", req), 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeJobRequest is bus.Decode of a job request packet.
func BenchmarkDecodeJobRequest(b *testing.B) {
	for _, size := range benchPayloads {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			data := benchMarshal(b, benchRequestPacket(size))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bus.Decode(data, bus.DefaultMaxPacketBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeJobResult is a worker's result wrapped and marshalled.
func BenchmarkEncodeJobResult(b *testing.B) {
	res := benchResultPacket().GetJobResult()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.AppendPacket(nil, wire.JobResultPacket("bench-s-0123456789", "worker-echo-host-0123abcd", res), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeJobResult is bus.Decode of a job result packet.
func BenchmarkDecodeJobResult(b *testing.B) {
	data := benchMarshal(b, benchResultPacket())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bus.Decode(data, bus.DefaultMaxPacketBytes); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeTransient is the scheduler's intake decode (Consume,
// ConsumeTree): the packet pooled, a job request allocated to be kept, a
// result not at all.
func BenchmarkDecodeTransient(b *testing.B) {
	for _, tc := range []struct {
		name, subject string
		p             *pb.BusPacket
	}{{"request", "sys.job.submit", benchRequestPacket(0)}, {"result", "sys.job.result.worker-echo-0", benchResultPacket()}} {
		b.Run(tc.name, func(b *testing.B) {
			data := benchMarshal(b, tc.p)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				_, release, err := bus.DecodeTransient(data, bus.DefaultMaxPacketBytes, tc.subject)
				if err != nil {
					b.Fatal(err)
				}
				release.Release()
			}
		})
	}
}

// BenchmarkNatsBusPublish is NatsBus.Publish of a job request packet to an
// in-process server with no subscriber: encoding plus the client's write.
func BenchmarkNatsBusPublish(b *testing.B) {
	nb, err := bus.Connect(bus.Config{URL: natstest.URL(b), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer nb.Close()
	p := benchRequestPacket(0)
	b.ReportAllocs()
	for b.Loop() {
		if err := nb.Publish("job.bench", p); err != nil {
			b.Fatal(err)
		}
	}
}
