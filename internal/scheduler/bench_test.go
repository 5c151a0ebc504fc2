package scheduler_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The per-job hot path of the scheduler, without NATS: see docs/BENCHMARKS.md.
// Run: go test -run '^$' -bench . -benchmem ./internal/scheduler

// benchNopBus is a Bus that drops what is published and confirms every
// dispatch at once: the JobAck for the request's job and attempt comes back
// through the engine's replies handler before PublishRequest returns.
type benchNopBus struct {
	published, requests int
	noAck               bool // dispatches go unconfirmed, as a job that ends within the worker's AckDelay
	replies             func(subject string, p *pb.BusPacket, noResponders bool)
	ack                 pb.BusPacket
	jobAck              pb.JobAck
}

func (b *benchNopBus) Publish(string, *pb.BusPacket) error { b.published++; return nil }

func (b *benchNopBus) PublishRequest(_, reply string, p *pb.BusPacket) error {
	b.requests++
	if b.replies != nil && !b.noAck {
		req := p.GetJobRequest()
		b.jobAck = pb.JobAck{JobId: req.GetJobId(), Attempt: req.GetAttempt(), WorkerId: "worker-echo-0"}
		b.ack.Payload = &pb.BusPacket_JobAck{JobAck: &b.jobAck}
		b.replies(reply, &b.ack, false)
	}
	return nil
}

func nop() error { return nil }

func (b *benchNopBus) Subscribe(string, string, func(*pb.BusPacket)) (func() error, error) {
	return nop, nil
}

func (b *benchNopBus) SubscribeReplies(_ string, h func(string, *pb.BusPacket, bool)) (func() error, error) {
	b.replies = h
	return nop, nil
}

func (b *benchNopBus) ServeTree(string, string, func(string, string, *pb.BusPacket, error) *pb.BusPacket) (func() error, error) {
	return nop, nil
}

func (b *benchNopBus) Consume(string, string, func(*pb.BusPacket, string) error) (func() error, error) {
	return nop, nil
}

func (b *benchNopBus) SubscribeWithSubject(string, string, func(string, *pb.BusPacket)) (func() error, error) {
	return nop, nil
}

func (b *benchNopBus) ConsumeTree(string, string, func(string, *pb.BusPacket, string) error) (func() error, error) {
	return nop, nil
}

// benchEngine is a started engine on the nop bus and an in-memory store.
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
		// Timers idle: the benchmark's goroutine is the only one at work.
		Tick: time.Hour, AckTimeout: time.Hour, LeaseInterval: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Stop(b.Context()) })
	return e, bus
}

func benchJobRequest(id string) *pb.JobRequest {
	return &pb.JobRequest{JobId: id, Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_INTERACTIVE}
}

// benchIDs returns n distinct job ids, made before the clock runs.
func benchIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "bench-" + strconv.Itoa(i)
	}
	return ids
}

// BenchmarkHandlePacketSubmit is a new job taken, checked, recorded,
// placed, dispatched and confirmed (the bus does not encode), with 1 and 100
// workers known. Each iteration submits a job with a new id.
func BenchmarkHandlePacketSubmit(b *testing.B) {
	for _, workers := range []int{1, 100} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			e, bus := benchEngine(b, workers)
			ids := benchIDs(b.N)
			reqs := make([]*pb.BusPacket, len(ids))
			for i, id := range ids {
				reqs[i] = wire.JobRequestPacket("trace-0123456789", "client", benchJobRequest(id))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				e.HandlePacket(reqs[i])
				if (i+1)%benchBatch == 0 {
					// Bounded: the jobs of a batch end, off the clock, so the
					// active set does not grow with b.N.
					b.StopTimer()
					completeAll(e, ids[i+1-benchBatch:i+1])
					b.StartTimer()
				}
			}
			b.StopTimer()
			s := e.Stats()
			if s.Accepted != uint64(b.N) || s.Dispatched != uint64(b.N) || bus.requests != b.N {
				b.Fatalf("accepted %d, dispatched %d, requests %d; want %d", s.Accepted, s.Dispatched, bus.requests, b.N)
			}
		})
	}
}

// benchBatch bounds the active jobs of the one-sided benchmarks: a job
// submitted (or completed) on the clock has its other side done off it,
// a batch at a time.
const benchBatch = 10_000

// completeAll applies a COMPLETED result to each job of ids.
func completeAll(e *scheduler.Engine, ids []string) {
	for _, id := range ids {
		e.HandlePacket(wire.JobResultPacket("trace-0123456789", "worker-echo-0", &pb.JobResult{
			JobId: id, Status: pb.JobStatus_JOB_STATUS_COMPLETED, Attempt: 1,
			ResultPtr: "memory://echo/" + id, WorkerId: "worker-echo-0",
		}))
	}
}

// BenchmarkHandlePacketResult is a RUNNING job's result taken and applied:
// the job COMPLETED. The jobs are submitted off the clock, a batch at a time.
func BenchmarkHandlePacketResult(b *testing.B) {
	e, _ := benchEngine(b, 1)
	ids := benchIDs(b.N)
	results := make([]*pb.BusPacket, len(ids))
	for i, id := range ids {
		results[i] = wire.JobResultPacket("trace-0123456789", "worker-echo-0", &pb.JobResult{
			JobId: id, Status: pb.JobStatus_JOB_STATUS_COMPLETED, Attempt: 1,
			ResultPtr: "memory://echo/" + id, WorkerId: "worker-echo-0",
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%benchBatch == 0 {
			// The next batch's jobs are submitted off the clock, so at most
			// a batch is active whatever b.N.
			b.StopTimer()
			for _, id := range ids[i:min(i+benchBatch, b.N)] {
				e.HandlePacket(wire.JobRequestPacket("trace-0123456789", "client", benchJobRequest(id)))
			}
			b.StartTimer()
		}
		e.HandlePacket(results[i])
	}
	b.StopTimer()
	if s := e.Stats(); s.Completed != uint64(b.N) {
		b.Fatalf("completed %d of %d (stats %+v)", s.Completed, b.N, s)
	}
}

// BenchmarkJobLife is a job's whole way through the engine in steady state:
// its submission taken, recorded DISPATCHED and published, then its result
// applied (COMPLETED), with the store keeping the last 100,000 finished jobs,
// full before the clock runs. The dispatch is not confirmed, as with a job
// that ends before the worker's AckDelay (cortex bench's echo jobs).
func BenchmarkJobLife(b *testing.B) {
	e, bus := benchEngine(b, 1)
	bus.noAck = true
	life := func(id string) {
		e.HandlePacket(wire.JobRequestPacket("trace-0123456789", "client", benchJobRequest(id)))
		e.HandlePacket(wire.JobResultPacket("trace-0123456789", "worker-echo-0", &pb.JobResult{
			JobId: id, Status: pb.JobStatus_JOB_STATUS_COMPLETED, Attempt: 1,
			ResultPtr: "memory://echo/" + id, WorkerId: "worker-echo-0",
		}))
	}
	for _, id := range benchIDs(jobstore.DefaultMemoryRetain) {
		life("warm-" + id)
	}
	ids := benchIDs(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		life(ids[i])
	}
	b.StopTimer()
	if s := e.Stats(); s.Completed != uint64(b.N+jobstore.DefaultMemoryRetain) {
		b.Fatalf("completed %d of %d (stats %+v)", s.Completed, b.N+jobstore.DefaultMemoryRetain, s)
	}
}

// BenchmarkSafetyStubCheck is the safety check of one job.
func BenchmarkSafetyStubCheck(b *testing.B) {
	s := scheduler.NewSafetyStub()
	req := benchJobRequest("bench-0123456789")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if v, _ := s.Check(ctx, req); v.Decision != scheduler.SafetyAllow {
			b.Fatal("denied")
		}
	}
}

// BenchmarkNaiveStrategyPickSubject is the placement decision of one job.
func BenchmarkNaiveStrategyPickSubject(b *testing.B) {
	s := scheduler.NewNaiveStrategy()
	req := benchJobRequest("bench-0123456789")
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

func (b *benchNopBus) InboxPrefix() string                          { return "" }
func (b *benchNopBus) Flush(context.Context) error                  { return nil }
func (b *benchNopBus) Backlog(context.Context, string) (int, error) { return 0, nil }

// BenchmarkJobLifePaths is BenchmarkJobLife on the paths the scheduler can
// run: naive (the queue group picks) and placed (least-loaded on the
// workers' heartbeats, the default), with the stub or the safety kernel
// and its shipped policy.
func BenchmarkJobLifePaths(b *testing.B) {
	for _, c := range []struct {
		name           string
		placed, kernel bool
	}{{"naive-stub", false, false}, {"placed-stub", true, false}, {"placed-kernel", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			bus := &benchNopBus{noAck: true}
			cfg := scheduler.Config{
				Bus: bus, Safety: scheduler.NewSafetyStub(), Strategy: scheduler.NewNaiveStrategy(),
				ID: "cortex-scheduler-bench", Logger: logging.Discard(),
				Tick: time.Hour, AckTimeout: time.Hour, LeaseInterval: time.Hour,
			}
			hb := &pb.Heartbeat{WorkerId: "worker-echo-0", Capabilities: []string{"echo"}, Topics: []string{"job.echo"},
				Capacity: 1000, Direct: true, Confirms: true, IntervalMs: time.Hour.Milliseconds()}
			if c.placed {
				pools, err := placement.NewPools(placement.Config{})
				if err != nil {
					b.Fatal(err)
				}
				reg := placement.NewRegistry(placement.RegistryOptions{Pools: pools})
				reg.UpdateHeartbeat(hb)
				cfg.Registry, cfg.Placement = reg, pools
			} else {
				reg := scheduler.NewMemoryRegistry()
				reg.UpdateHeartbeat(hb)
				cfg.Registry = reg
			}
			if c.kernel {
				k, err := safety.New(safety.Config{Logger: logging.Discard()})
				if err != nil {
					b.Fatal(err)
				}
				cfg.Safety = k
			}
			e, err := scheduler.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = e.Stop(context.WithoutCancel(b.Context())) })
			life := func(id string) {
				e.HandlePacket(wire.JobRequestPacket("trace-0123456789", "client", benchJobRequest(id)))
				e.HandlePacket(wire.JobResultPacket("trace-0123456789", "worker-echo-0", &pb.JobResult{
					JobId: id, Status: pb.JobStatus_JOB_STATUS_COMPLETED, Attempt: 1,
					ResultPtr: "memory://echo/" + id, WorkerId: "worker-echo-0",
				}))
			}
			for _, id := range benchIDs(20000) {
				life("warm-" + id)
			}
			ids := benchIDs(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				life(ids[i])
			}
			b.StopTimer()
			if s := e.Stats(); s.Completed != uint64(b.N+20000) {
				b.Fatalf("completed %d of %d (stats %+v)", s.Completed, b.N+20000, s)
			}
		})
	}
}
