package scheduler_test

import (
	"fmt"
	"testing"

	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The per-job hot path of the scheduler, without NATS: see docs/BENCHMARKS.md.
// Run: go test -run '^$' -bench . -benchmem ./internal/scheduler

// benchNopBus is a Bus that drops what is published.
type benchNopBus struct{ published int }

func (b *benchNopBus) Publish(string, *pb.BusPacket) error { b.published++; return nil }

func (b *benchNopBus) Subscribe(string, string, func(*pb.BusPacket)) (func() error, error) {
	return func() error { return nil }, nil
}

func benchEngine(b *testing.B, workers int) (*scheduler.Engine, *benchNopBus) {
	b.Helper()
	bus := &benchNopBus{}
	reg := scheduler.NewMemoryRegistry()
	for i := range workers {
		reg.UpdateHeartbeat(&pb.Heartbeat{WorkerId: fmt.Sprintf("worker-echo-%d", i), Capabilities: []string{"echo"}})
	}
	e, err := scheduler.New(scheduler.Config{
		Bus:      bus,
		Safety:   scheduler.NewSafetyStub(),
		Registry: reg,
		Strategy: scheduler.NewNaiveStrategy(),
		ID:       "cortex-scheduler-bench",
		Logger:   logging.Discard(),
	})
	if err != nil {
		b.Fatal(err)
	}
	return e, bus
}

func benchJobRequest() *pb.JobRequest {
	return &pb.JobRequest{JobId: "bench-0123456789", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_INTERACTIVE}
}

// BenchmarkHandlePacketSubmit is a submission taken, checked, placed and
// dispatched (the bus does not encode), with 1 and 100 workers known.
func BenchmarkHandlePacketSubmit(b *testing.B) {
	for _, workers := range []int{1, 100} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			e, bus := benchEngine(b, workers)
			p := wire.JobRequestPacket("trace-0123456789", "client", benchJobRequest())
			b.ReportAllocs()
			for b.Loop() {
				e.HandlePacket(p)
			}
			if bus.published == 0 || e.Stats().Dispatched != uint64(bus.published) {
				b.Fatalf("dispatched %d, published %d", e.Stats().Dispatched, bus.published)
			}
		})
	}
}

// BenchmarkHandlePacketResult is a job result taken by the scheduler.
func BenchmarkHandlePacketResult(b *testing.B) {
	e, _ := benchEngine(b, 1)
	p := wire.JobResultPacket("trace-0123456789", "worker-echo-0", &pb.JobResult{
		JobId: "bench-0123456789", Status: pb.JobStatus_JOB_STATUS_COMPLETED,
		ResultPtr: "memory://echo/bench-0123456789", WorkerId: "worker-echo-0",
	})
	b.ReportAllocs()
	for b.Loop() {
		e.HandlePacket(p)
	}
	if e.Stats().Results == 0 {
		b.Fatal("no result counted")
	}
}

// BenchmarkSafetyStubCheck is the safety check of one job.
func BenchmarkSafetyStubCheck(b *testing.B) {
	s := scheduler.NewSafetyStub()
	req := benchJobRequest()
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := s.Check(req); d != scheduler.SafetyAllow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkNaiveStrategyPickSubject is the placement decision of one job.
func BenchmarkNaiveStrategyPickSubject(b *testing.B) {
	s := scheduler.NewNaiveStrategy()
	req := benchJobRequest()
	workers := map[string]*pb.Heartbeat{"worker-echo-0": {WorkerId: "worker-echo-0"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.PickSubject(req, workers); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryRegistrySnapshot is what a placement over the registry
// costs before the strategy runs, with 1 and 100 workers known.
func BenchmarkMemoryRegistrySnapshot(b *testing.B) {
	for _, workers := range []int{1, 100} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			reg := scheduler.NewMemoryRegistry()
			for i := range workers {
				reg.UpdateHeartbeat(&pb.Heartbeat{WorkerId: fmt.Sprintf("worker-echo-%d", i)})
			}
			b.ReportAllocs()
			for b.Loop() {
				if len(reg.Snapshot()) != workers {
					b.Fatal("snapshot size")
				}
			}
		})
	}
}
