package bus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protopack"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

const waitFor = 10 * time.Second

// syncBuffer collects a logger's output while the test reads it.
type syncBuffer = logging.Buffer

func testLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func flush(t testing.TB, b *bus.NatsBus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// collector records the packets a handler receives.
type collector struct {
	mu      sync.Mutex
	packets []*pb.BusPacket
}

func (c *collector) handle(p *pb.BusPacket) {
	c.mu.Lock()
	c.packets = append(c.packets, p)
	c.mu.Unlock()
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.packets)
}

func (c *collector) all() []*pb.BusPacket {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*pb.BusPacket(nil), c.packets...)
}

func subscribe(t testing.TB, b *bus.NatsBus, subject, queue string, h func(*pb.BusPacket)) func() error {
	t.Helper()
	drain, err := b.Subscribe(subject, queue, h)
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	// The server has the subscription once this connection's PING is answered.
	flush(t, b)
	return drain
}

func jobPacket(id string) *pb.BusPacket {
	return wire.JobRequestPacket("trace-"+id, "test", &pb.JobRequest{JobId: id, Topic: "job.echo"})
}

func TestRoundTripEveryPayloadKind(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	pubBus := systest.ConnectWith(t, bus.Config{URL: url})
	subBus := systest.ConnectWith(t, bus.Config{URL: url})

	packets := []*pb.BusPacket{
		wire.JobRequestPacket("t-req", "client", &pb.JobRequest{
			JobId: "j1", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_CRITICAL,
			ContextPtr: "redis://jobs/j1/context", AdapterId: "a", EnvVars: map[string]string{"K": "V"},
		}),
		wire.JobResultPacket("t-res", "worker", &pb.JobResult{
			JobId: "j1", Status: pb.JobStatus_JOB_STATUS_FAILED, ResultPtr: "memory://x", WorkerId: "w", ExecutionMs: 42,
		}),
		wire.HeartbeatPacket("t-hb", "worker", &pb.Heartbeat{
			WorkerId: "w", Region: "eu", Type: "gpu", CpuLoad: 12.5, GpuUtilization: 99, ActiveJobs: 3,
			Capabilities: []string{"echo", "python"},
		}),
		{TraceId: "t-alert", SenderId: "x", ProtocolVersion: wire.ProtocolVersion,
			Payload: &pb.BusPacket_Alert{Alert: &pb.SystemAlert{Level: "WARN", Message: "m", Component: "c"}}},
	}

	var got collector
	subscribe(t, subBus, "rt.>", "", got.handle)
	for i, p := range packets {
		if err := pubBus.Publish(fmt.Sprintf("rt.%d", i), p); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	systest.Eventually(t, waitFor, fmt.Sprintf("%d packets", len(packets)), func() bool { return got.len() == len(packets) })
	for i, p := range got.all() {
		if !proto.Equal(p, packets[i]) {
			t.Errorf("packet %d:\n got %v\nwant %v", i, p, packets[i])
		}
	}
	if s := pubBus.Stats(); s.Published != uint64(len(packets)) {
		t.Errorf("publisher Published = %d, want %d", s.Published, len(packets))
	}
	if s := subBus.Stats(); s.Delivered != uint64(len(packets)) || s.Malformed+s.TooLarge+s.UnknownPayload+s.HandlerPanics != 0 {
		t.Errorf("subscriber stats = %+v", s)
	}
}

func TestQueueGroupSharesAndEmptyQueueFansOut(t *testing.T) {
	t.Parallel()
	const n = 40
	for _, tc := range []struct {
		name     string
		queue    string
		wantEach bool // every subscriber sees every message
	}{
		{"queue group", "q", false},
		{"no queue", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			pubBus := systest.ConnectWith(t, bus.Config{URL: url})
			var subs [2]collector
			var buses [2]*bus.NatsBus
			for i := range subs {
				buses[i] = systest.ConnectWith(t, bus.Config{URL: url})
				subscribe(t, buses[i], "work", tc.queue, subs[i].handle)
			}
			for i := range n {
				if err := pubBus.Publish("work", jobPacket(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			want := n
			if tc.wantEach {
				want = 2 * n
			}
			systest.Eventually(t, waitFor, fmt.Sprintf("%d deliveries", want), func() bool { return subs[0].len()+subs[1].len() >= want })
			// Anything extra would have been sent before this round trip ends.
			flush(t, pubBus)
			for i := range buses {
				flush(t, buses[i])
			}

			seen := map[string]int{}
			for i := range subs {
				perSub := map[string]bool{}
				for _, p := range subs[i].all() {
					id := p.GetJobRequest().GetJobId()
					if perSub[id] {
						t.Errorf("subscriber %d got job %s twice", i, id)
					}
					perSub[id] = true
					seen[id]++
				}
				if tc.wantEach && len(perSub) != n {
					t.Errorf("subscriber %d got %d distinct jobs, want all %d", i, len(perSub), n)
				}
			}
			if len(seen) != n {
				t.Errorf("%d distinct jobs delivered, want %d", len(seen), n)
			}
			for id, c := range seen {
				wantCount := 1
				if tc.wantEach {
					wantCount = 2
				}
				if c != wantCount {
					t.Errorf("job %s delivered %d times, want %d", id, c, wantCount)
				}
			}
		})
	}
}

func TestBadInboundPacketsAreCountedAndDeliveryContinues(t *testing.T) {
	t.Parallel()
	// A packet with only a field a newer protocol might add to the oneof.
	future := protopack.Message{
		protopack.Tag{Number: 1, Type: protopack.BytesType}, protopack.String("trace"),
		protopack.Tag{Number: 99, Type: protopack.BytesType}, protopack.Bytes("new payload"),
	}.Marshal()
	oversize := bytes.Repeat([]byte{0}, 512)
	valid, err := proto.Marshal(jobPacket("ok"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		data  []byte
		check func(bus.Stats) bool
	}{
		{"garbage", []byte("\xff\xff\xff\xff not a protobuf"), func(s bus.Stats) bool { return s.Malformed == 1 }},
		{"truncated", valid[:len(valid)-3], func(s bus.Stats) bool { return s.Malformed == 1 }},
		{"oversize", oversize, func(s bus.Stats) bool { return s.TooLarge == 1 }},
		{"empty", nil, func(s bus.Stats) bool { return s.UnknownPayload == 1 }},
		{"future payload", future, func(s bus.Stats) bool { return s.UnknownPayload == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			pubBus := systest.ConnectWith(t, bus.Config{URL: url})
			var logs syncBuffer
			subBus := systest.ConnectWith(t, bus.Config{URL: url, MaxPacketBytes: 256, Logger: testLogger(&logs)})
			var got collector
			subscribe(t, subBus, "in", "", got.handle)

			if err := pubBus.Conn().Publish("in", tc.data); err != nil {
				t.Fatal(err)
			}
			if err := pubBus.Conn().Publish("in", valid); err != nil {
				t.Fatal(err)
			}
			systest.Eventually(t, waitFor, "the valid packet after the bad one", func() bool { return got.len() == 1 })
			if id := got.all()[0].GetJobRequest().GetJobId(); id != "ok" {
				t.Errorf("delivered job %q, want ok", id)
			}
			s := subBus.Stats()
			if !tc.check(s) {
				t.Errorf("stats = %+v", s)
			}
			if s.Delivered != 1 || s.Malformed+s.TooLarge+s.UnknownPayload != 1 {
				t.Errorf("want exactly one drop and one delivery, stats = %+v", s)
			}
			if !strings.Contains(logs.String(), "bus dropped packet") {
				t.Errorf("drop not logged:\n%s", logs.String())
			}
		})
	}
}

func TestHandlerPanicIsCountedAndDeliveryContinues(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	pubBus := systest.ConnectWith(t, bus.Config{URL: url})
	var logs syncBuffer
	subBus := systest.ConnectWith(t, bus.Config{URL: url, Logger: testLogger(&logs)})
	var got collector
	subscribe(t, subBus, "p", "", func(p *pb.BusPacket) {
		if p.GetJobRequest().GetJobId() == "boom" {
			panic("handler exploded")
		}
		got.handle(p)
	})
	for _, id := range []string{"boom", "after", "boom", "last"} {
		if err := pubBus.Publish("p", jobPacket(id)); err != nil {
			t.Fatal(err)
		}
	}
	systest.Eventually(t, waitFor, "two packets after panics", func() bool { return got.len() == 2 })
	if s := subBus.Stats(); s.HandlerPanics != 2 || s.Delivered != 4 {
		t.Errorf("stats = %+v, want 2 panics and 4 deliveries", s)
	}
	if !strings.Contains(logs.String(), "handler exploded") {
		t.Errorf("panic not logged:\n%s", logs.String())
	}
}

func TestPublishRefusesOversizeAndNil(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url, MaxPacketBytes: 128})

	big := jobPacket("big")
	big.GetJobRequest().ContextPtr = strings.Repeat("x", 200)
	err := b.Publish("x", big)
	if !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("Publish(oversize) = %v, want ErrTooLarge", err)
	}
	if err := b.Publish("x", nil); !errors.Is(err, bus.ErrNilPacket) {
		t.Errorf("Publish(nil) = %v, want ErrNilPacket", err)
	}
	if err := b.Publish("x", jobPacket("small")); err != nil {
		t.Errorf("Publish(small) = %v", err)
	}
	if s := b.Stats(); s.TooLarge != 1 || s.Published != 1 {
		t.Errorf("stats = %+v, want TooLarge 1, Published 1", s)
	}
}

func TestSubscribeNilHandler(t *testing.T) {
	t.Parallel()
	b := systest.ConnectWith(t, bus.Config{URL: natstest.URL(t)})
	if _, err := b.Subscribe("x", "", nil); err == nil {
		t.Fatal("Subscribe with a nil handler succeeded")
	}
}

func TestDrainWaitsForInFlightHandler(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	pubBus := systest.ConnectWith(t, bus.Config{URL: srv.ClientURL()})
	subBus := systest.ConnectWith(t, bus.Config{URL: srv.ClientURL()})

	started := make(chan struct{})
	release := make(chan struct{})
	var finished sync.WaitGroup
	finished.Add(2)
	var done collector
	drain := subscribe(t, subBus, "slow", "", func(p *pb.BusPacket) {
		if p.GetJobRequest().GetJobId() == "1" {
			close(started)
			<-release
		}
		done.handle(p)
		finished.Done()
	})
	before := srv.NumSubscriptions()
	for _, id := range []string{"1", "2"} {
		if err := pubBus.Publish("slow", jobPacket(id)); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	// Both packets are in the client by the time the subscriber has answered a PING.
	flush(t, pubBus)
	flush(t, subBus)

	drained := make(chan error, 1)
	go func() { drained <- drain() }()
	// The drain has begun once the server lost the subscription.
	systest.Eventually(t, waitFor, "the server to see the unsubscribe", func() bool { return srv.NumSubscriptions() < before })
	select {
	case err := <-drained:
		t.Fatalf("drain returned (%v) while the handler was still running", err)
	default:
	}
	close(release)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("drain did not return")
	}
	// Drain returned only after the handler had handled both packets.
	if n := done.len(); n != 2 {
		t.Fatalf("drain returned after %d of 2 packets", n)
	}
	finished.Wait()

	// After the drain nothing more is delivered.
	if err := pubBus.Publish("slow", jobPacket("3")); err != nil {
		t.Fatal(err)
	}
	flush(t, pubBus)
	flush(t, subBus)
	if n := done.len(); n != 2 {
		t.Errorf("%d packets after drain, want 2", n)
	}
	// Draining twice is harmless.
	if err := drain(); err != nil {
		t.Errorf("second drain: %v", err)
	}
}

func TestCloseDeliversPublishedThenWaitsForHandlers(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	url := srv.ClientURL()

	// Subscriber: its handler blocks until released; Close must wait for it.
	subBus, err := bus.Connect(bus.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 100)
	release := make(chan struct{})
	var got collector
	subscribe(t, subBus, "c", "", func(p *pb.BusPacket) {
		started <- struct{}{}
		<-release
		got.handle(p)
	})

	// Publisher: publishes then closes at once; Close flushes what it published.
	const n = 50
	pubBus, err := bus.Connect(bus.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := pubBus.Publish("c", jobPacket(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	pubBus.Close()
	if !pubBus.Conn().IsClosed() {
		t.Error("publisher connection not closed after Close")
	}

	<-started
	// The publisher's Close returned after the server had its packets, so they
	// are all in the subscriber's client once it has answered a PING.
	flush(t, subBus)

	closed := make(chan struct{})
	go func() { subBus.Close(); close(closed) }()
	systest.Eventually(t, waitFor, "subscriber draining", func() bool { return subBus.Conn().IsDraining() || subBus.Conn().IsClosed() })
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was blocked")
	default:
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(waitFor):
		t.Fatal("Close did not return")
	}
	if g := got.len(); g != n {
		t.Errorf("%d of %d packets handled before Close returned", g, n)
	}
	subBus.Close() // twice is harmless
}

func TestReconnectAfterServerRestart(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	url := srv.URL()

	var logs syncBuffer
	subBus := systest.ConnectWith(t, bus.Config{URL: url, Logger: testLogger(&logs)})
	var got collector
	subscribe(t, subBus, "r", "", got.handle)

	srv.Shutdown()
	systest.Eventually(t, waitFor, "the client to notice the shutdown", func() bool { return !subBus.Conn().IsConnected() })
	srv.Start(t) // same port, same JetStream directory

	systest.Eventually(t, waitFor, "a reconnect to be counted", func() bool { return subBus.Stats().Reconnects >= 1 })
	if !strings.Contains(logs.String(), "bus reconnected") {
		t.Errorf("reconnect not logged:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "bus disconnected") {
		t.Errorf("disconnect not logged:\n%s", logs.String())
	}

	// The subscription was restored: a packet published now arrives.
	flush(t, subBus)
	pubBus := systest.ConnectWith(t, bus.Config{URL: url})
	if err := pubBus.Publish("r", jobPacket("after-restart")); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "delivery after the reconnect", func() bool { return got.len() == 1 })
}
