package kvstore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// BenchmarkCreateAfterIdle times one record's create on the embedded
// server when the process has been idle for gap before it (gap 0: creates
// back to back), and, for comparison, a core request to a subscriber on
// another connection after the same gap. On a machine whose processors
// sleep when idle, a lone write pays for waking each goroutine on its path
// (the client's flusher, the server's reader, the stream's loop, its
// acknowledgement's sender, the client's reader): the figures say how much
// of a window-1 latency that is (docs/BENCHMARKS.md).
//
//	go test -run '^$' -bench CreateAfterIdle -benchtime 3000x ./internal/jobstore/kvstore
func BenchmarkCreateAfterIdle(b *testing.B) {
	srv := natstest.RunServer(b)
	nc := natstest.Conn(b, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	peer := natstest.Conn(b, srv.ClientURL())
	if _, err := peer.Subscribe("idle.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		b.Fatal(err)
	}
	for _, gap := range []time.Duration{0, 50 * time.Microsecond, time.Millisecond} {
		b.Run(fmt.Sprintf("create/gap=%v", gap), func(b *testing.B) {
			s, err := New(context.Background(), js, Config{Bucket: uniqueName("IDLE"), Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			took := make([]time.Duration, 0, b.N)
			for i := 0; b.Loop(); i++ {
				if gap > 0 {
					time.Sleep(gap)
				}
				job := &pb.JobInfo{JobId: fmt.Sprintf("j%d", i), State: lifecycle.Dispatched, Request: &pb.JobRequest{JobId: fmt.Sprintf("j%d", i), Topic: "job.echo"}}
				start := time.Now()
				if _, err := s.Create(context.Background(), job); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			reportQuantiles(b, took)
		})
		b.Run(fmt.Sprintf("core-request/gap=%v", gap), func(b *testing.B) {
			took := make([]time.Duration, 0, b.N)
			for b.Loop() {
				if gap > 0 {
					time.Sleep(gap)
				}
				start := time.Now()
				if _, err := nc.Request("idle.echo", []byte("x"), time.Second); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			reportQuantiles(b, took)
		})
	}
}

// reportQuantiles reports the p50 and p90 of took, in µs: with sleeps
// between operations, ns/op says nothing.
func reportQuantiles(b *testing.B, took []time.Duration) {
	if len(took) == 0 {
		return
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(took[len(took)*9/10].Nanoseconds())/1e3, "p90-µs")
	b.ReportMetric(0, "ns/op")
}
