package worker_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// The worker runtime's per-job path, without NATS: see docs/BENCHMARKS.md.
// Run: go test -run '^$' -bench . -benchmem ./pkg/worker

// benchReply is the reply subject of the benchmark's dispatches.
const benchReply = "_INBOX.bench"

// benchBus hands the worker's job handler to the benchmark and counts the
// jobs it is done with: results, and refusals on the reply subject.
type benchBus struct {
	mu      sync.Mutex
	handler func(p *pb.BusPacket, reply string)
	ready   chan struct{}
	results atomic.Int64
	refused atomic.Int64
	done    chan struct{}
	want    atomic.Int64
}

func (b *benchBus) Publish(subject string, p *pb.BusPacket) error {
	switch {
	case subject == wire.SubjectResult:
	case subject == benchReply && p.GetJobAnswer() != nil:
		b.refused.Add(1)
	default: // heartbeats, confirmations
		return nil
	}
	if b.results.Add(1) == b.want.Load() {
		close(b.done)
	}
	return nil
}

// Subscribe takes the cancel subscription, which the benchmark never uses.
func (b *benchBus) Subscribe(_, _ string, _ func(*pb.BusPacket)) (func() error, error) {
	return func() error { return nil }, nil
}

func (b *benchBus) SubscribeWithReply(_, _ string, h func(*pb.BusPacket, string)) (func() error, error) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
	close(b.ready)
	return func() error { return nil }, nil
}

// BenchmarkWorkerJob is one job published straight on the topic (attempt 0,
// no reply subject) through the worker runtime: taken from the subscription,
// run on a no-op handler, its result built and published (the bus does not
// encode). Jobs are fed as fast as the runtime takes them.
func BenchmarkWorkerJob(b *testing.B) {
	benchWorker(b, 0, "")
}

// BenchmarkWorkerJobDispatched is the same for jobs the scheduler
// dispatches (attempt 1, a reply subject): a job that ends within AckDelay is
// confirmed by its result alone; one refused (no slot within SlotWait)
// counts as done and is reported as refused/op.
func BenchmarkWorkerJobDispatched(b *testing.B) {
	benchWorker(b, 1, benchReply)
}

func benchWorker(b *testing.B, attempt int32, reply string) {
	bus := &benchBus{ready: make(chan struct{}), done: make(chan struct{})}
	w, err := worker.NewOnTransport(bus, worker.Config{
		Kind: "echo",
		Handler: worker.HandlerFunc(func(_ context.Context, job *worker.Job) (worker.Result, error) {
			return worker.Result{Ptr: "memory://echo/" + job.ID()}, nil
		}),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	<-bus.ready
	bus.mu.Lock()
	handle := bus.handler
	bus.mu.Unlock()
	p := wire.JobRequestPacket("trace-0123456789", "cortex-scheduler", &pb.JobRequest{JobId: "bench-0123456789", Topic: "job.echo", Attempt: attempt})

	n := int64(b.N)
	bus.want.Store(n)
	b.ReportAllocs()
	b.ResetTimer()
	for range n {
		// Stamped as sent now, as a real dispatch is: SlotWait counts from
		// created_at. The callback reads it before handle returns.
		now := time.Now()
		p.CreatedAt.Seconds, p.CreatedAt.Nanos = now.Unix(), int32(now.Nanosecond())
		handle(p, reply)
	}
	<-bus.done
	b.StopTimer()
	if reply != "" {
		b.ReportMetric(float64(bus.refused.Load())/float64(n), "refused/op")
	}
	cancel()
	if err := <-ran; err != nil {
		b.Fatal(err)
	}
}
