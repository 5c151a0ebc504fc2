package bus_test

import (
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// A bus on the caller's connection hardens what it receives as one from
// Connect does (oversized and malformed packets dropped and counted, a
// handler's panic contained), and its Close leaves the connection open.
func TestFromConnHardensAndLeavesTheConnection(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var logs syncBuffer
	b := bus.FromConn(nc, bus.Config{Logger: testLogger(&logs), MaxPacketBytes: 512})

	var got atomic.Int32
	drain, err := b.Subscribe("t.in", "", func(p *pb.BusPacket) {
		if p.GetJobRequest().GetJobId() == "boom" {
			panic("handler bug")
		}
		got.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	raw := func(data []byte) {
		t.Helper()
		if err := nc.Publish("t.in", data); err != nil {
			t.Fatal(err)
		}
	}
	raw([]byte{0xff, 0xff, 0xff}) // malformed
	raw(make([]byte, 600))        // over the cap
	pub := func(id string) {
		t.Helper()
		if err := b.Publish("t.in", wire.JobRequestPacket("tr", "s", &pb.JobRequest{JobId: id, Topic: "job.x"})); err != nil {
			t.Fatal(err)
		}
	}
	pub("boom")
	pub("ok")
	systest.Eventually(t, waitFor, "the good packet and the contained panic", func() bool { return got.Load() == 1 && b.Stats().HandlerPanics == 1 })
	if s := b.Stats(); s.Malformed != 1 || s.TooLarge != 1 {
		t.Errorf("stats %+v, want 1 malformed and 1 too large", s)
	}
	if err := drain(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if nc.IsClosed() || nc.IsDraining() {
		t.Fatal("Close of a FromConn bus closed the caller's connection")
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("the caller's connection after Close: %v", err)
	}
}
