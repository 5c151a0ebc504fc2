package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Serve answers only on inboxes: a request whose reply subject is anything
// else (the JetStream API, say) is counted and not answered, and the
// server goes on answering.
func TestServeAnswersOnlyOnInboxes(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	var logs syncBuffer
	srv := systest.ConnectWith(t, bus.Config{URL: url, Logger: testLogger(&logs)})
	drain, err := srv.Serve("svc", "", func(p *pb.BusPacket) *pb.BusPacket { return p })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain() }()
	flush(t, srv)

	spy, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	hit := make(chan string, 16)
	if _, err := spy.Subscribe("$JS.API.>", func(m *nats.Msg) { hit <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	if _, err := spy.Subscribe("job.>", func(m *nats.Msg) { hit <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	data, _ := srv.Encode(jobPacket("j"))
	for _, reply := range []string{"$JS.API.STREAM.PURGE.X", "job.echo", "_INBOX.*"} {
		if err := spy.PublishRequest("svc", reply, data); err != nil {
			t.Fatal(err)
		}
	}
	// An honest request, sent after them, is answered after they were handled.
	c := systest.ConnectWith(t, bus.Config{URL: url})
	if _, err := c.Request(context.Background(), "svc", jobPacket("honest")); err != nil {
		t.Fatalf("honest request: %v", err)
	}
	systest.Eventually(t, waitFor, fmt.Sprintf("3 replies refused, have %d", srv.Stats().RepliesRefused), func() bool { return srv.Stats().RepliesRefused == 3 })
	select {
	case s := <-hit:
		t.Errorf("answered on %s", s)
	default:
	}
}

// ServeTree hands the handler the subject each request came on (the base
// or below it), its reply subject, and bytes that did not decode as an
// error; it answers the handler's non-nil return, and nothing for nil.
func TestServeTree(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	srv := systest.ConnectWith(t, bus.Config{URL: url})
	type call struct {
		subject, reply string
		ok, decodeErr  bool
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	drain, err := srv.ServeTree("sys.job.query", "q", func(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket {
		mu.Lock()
		calls = append(calls, call{subject, reply, p != nil, decodeErr != nil})
		mu.Unlock()
		if subject == "sys.job.query.silent" {
			return nil
		}
		out := wire.NewPacket("t", "srv")
		out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: decodeErr == nil, Error: subject}}
		return out
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain() }()
	flush(t, srv)
	c := systest.ConnectWith(t, bus.Config{URL: url})
	ctx := context.Background()
	for _, subject := range []string{"sys.job.query", "sys.job.query.tenant-a"} {
		a, err := c.Request(ctx, subject, jobPacket("j"))
		if err != nil || a.GetJobAnswer().GetError() != subject || !a.GetJobAnswer().GetOk() {
			t.Errorf("request on %s: %v, %v", subject, a, err)
		}
	}
	nc := c.Conn()
	m, err := nc.Request("sys.job.query.x", []byte{0xff, 0xff}, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := bus.Decode(m.Data, 0); err != nil || a.GetJobAnswer().GetOk() {
		t.Errorf("answer to garbage: %v, %v", a, err)
	}
	ctx2, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx2, "sys.job.query.silent", jobPacket("j")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a request the handler does not answer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 4 || calls[1].subject != "sys.job.query.tenant-a" || calls[2].ok || !calls[2].decodeErr ||
		calls[1].reply == "" || calls[1].reply[:7] != "_INBOX." {
		t.Errorf("calls %+v", calls)
	}
	if pfx := c.InboxPrefix(); pfx != "_INBOX" {
		t.Errorf("InboxPrefix without a custom prefix = %q", pfx)
	}
}
