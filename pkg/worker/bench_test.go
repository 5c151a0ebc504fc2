package worker_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// The worker runtime's per-job path, without NATS: see docs/BENCHMARKS.md.
// Run: go test -run '^$' -bench . -benchmem ./pkg/worker

// benchBus hands the worker's handler to the benchmark and counts results.
type benchBus struct {
	mu      sync.Mutex
	handler func(*pb.BusPacket)
	ready   chan struct{}
	results atomic.Int64
	done    chan struct{}
	want    atomic.Int64
}

func (b *benchBus) Publish(subject string, _ *pb.BusPacket) error {
	if subject == wire.SubjectResult && b.results.Add(1) == b.want.Load() {
		close(b.done)
	}
	return nil
}

func (b *benchBus) Subscribe(_, _ string, h func(*pb.BusPacket)) (func() error, error) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
	close(b.ready)
	return func() error { return nil }, nil
}

// BenchmarkWorkerJob is one job through the worker runtime: taken from the
// subscription, run on a no-op handler, its result built and published (the
// bus does not encode). Jobs are fed as fast as the runtime takes them.
func BenchmarkWorkerJob(b *testing.B) {
	bus := &benchBus{ready: make(chan struct{}), done: make(chan struct{})}
	w, err := worker.New(worker.Config{
		Bus:  bus,
		Kind: "echo",
		Handler: worker.HandlerFunc(func(_ context.Context, job *pb.JobRequest) (string, error) {
			return "memory://echo/" + job.GetJobId(), nil
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
	p := wire.JobRequestPacket("trace-0123456789", "cortex-scheduler", &pb.JobRequest{JobId: "bench-0123456789", Topic: "job.echo"})

	n := int64(b.N)
	bus.want.Store(n)
	b.ReportAllocs()
	b.ResetTimer()
	for range n {
		handle(p)
	}
	<-bus.done
	b.StopTimer()
	cancel()
	if err := <-ran; err != nil {
		b.Fatal(err)
	}
}
