package bus_test

import (
	"context"
	"testing"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Backlog counts the packets a consumer has received and not finished
// with: the one in its handler and those queued behind it, over core NATS
// and from a durable stream; 0 once they are handled, and for a subject
// nothing consumes.
func TestBacklog(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "core", true: "durable"}[durable], func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			b := systest.ConnectWith(t, bus.Config{URL: url})
			b.SetDurable(durable)
			release := make(chan struct{})
			handled := make(chan struct{}, 8)
			stop, err := b.Consume(wire.SubjectSubmit, "backlog-test", func(*pb.BusPacket, string) error {
				<-release
				handled <- struct{}{}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = stop() }()
			flush(t, b)
			ctx := context.Background()
			pub := systest.ConnectWith(t, bus.Config{URL: url})
			for i := range 3 {
				if err := pub.Publish(wire.SubjectSubmit, jobPacket("b"+string(rune('0'+i)))); err != nil {
					t.Fatal(err)
				}
			}
			flush(t, pub)
			systest.Eventually(t, waitFor, "a backlog of 3", func() bool { n, err := b.Backlog(ctx, wire.SubjectSubmit); return err == nil && n >= 3 })
			if n, err := b.Backlog(ctx, "sys.nothing"); n != 0 || err != nil {
				t.Errorf("Backlog of a subject nothing consumes = %d, %v", n, err)
			}
			close(release)
			for range 3 {
				<-handled
			}
			systest.Eventually(t, waitFor, "no backlog once handled", func() bool { n, err := b.Backlog(ctx, wire.SubjectSubmit); return err == nil && n == 0 })
		})
	}
}
