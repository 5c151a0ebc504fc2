package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// answers collects the answers to PublishAnswered by reply subject, a
// batched one (on <inbox>.batch) under each of the reply subjects it
// answers, and counts both kinds.
type answers struct {
	mu              sync.Mutex
	m               map[string]string
	single, batches int
}

func (a *answers) set(subject, answer string, batch []uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = make(map[string]string)
	}
	if batch == nil {
		a.single++
		a.m[subject] = answer
		return
	}
	a.batches++
	prefix := strings.TrimSuffix(subject, "batch")
	for _, n := range batch {
		a.m[prefix+strconv.FormatUint(n, 10)] = answer
	}
}

// kinds is how many answers came alone and how many in batches.
func (a *answers) kinds() (single, batches int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.single, a.batches
}

// subscribeAnswers subscribes b to the answers on <inbox>.*, for the test's
// length, and returns the inbox and what arrives on it.
func subscribeAnswers(t *testing.T, b *bus.NatsBus) (string, *answers) {
	t.Helper()
	got := &answers{}
	inbox := b.NewInbox()
	drain, err := b.SubscribeAnswers(inbox+".*", got.set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drain() })
	return inbox, got
}

func (a *answers) get(subject string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m[subject]
}

// A result published for an answer is not stored by the result stream; one
// replica handles it over core NATS and answers done once its handler has
// returned nil, retry when it failed. Clients reading sys.job.result still
// get it. A plain result still goes through the stream.
func TestAnsweredResultsSkipTheStream(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b, handled := durableResults(t, srv.URL())

	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got := subscribeAnswers(t, worker)
	var client counts
	drainClient, err := worker.Subscribe(wire.SubjectResults, "", func(p *pb.BusPacket) { client.add(p.GetJobResult().GetJobId()) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drainClient() }()
	flush(t, worker)

	for _, id := range []string{"a", "failing"} {
		if err := worker.PublishAnswered(wire.ResultSubject("w1"), resultPacket(id, "w1"), inbox+"."+id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := worker.Publish(wire.ResultSubject("w1"), resultPacket("plain", "w1")); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the answers and the plain result", func() bool {
		return got.get(inbox+".a") == bus.AnswerDone && got.get(inbox+".failing") == bus.AnswerRetry && handled.get("plain") == 1
	})
	if handled.get("a") != 1 || handled.get("failing") != 1 {
		t.Fatalf("handled a %d, failing %d times; want once each (nothing redelivers an answered result)", handled.get("a"), handled.get("failing"))
	}
	systest.Eventually(t, waitFor, "the client's copies", func() bool { return client.get("a") == 1 && client.get("failing") == 1 && client.get("plain") == 1 })

	if n := streamMsgs(t, b, wire.SubjectResult); n != 1 {
		t.Fatalf("the result stream holds %d messages; want 1 (the plain result)", n)
	}
}

// durableResults consumes results through the result stream on a bus of
// its own, for the test's length, failing the handling of the job
// "failing" (a store that is down); it counts what it handled.
func durableResults(t *testing.T, url string) (*bus.NatsBus, *counts) {
	t.Helper()
	b := systest.ConnectWith(t, bus.Config{URL: url})
	b.SetDurable(true)
	handled := &counts{}
	stop, err := b.ConsumeTree(wire.SubjectResult, "results", func(_ string, p *pb.BusPacket, _ string) error {
		id := p.GetJobResult().GetJobId()
		handled.add(id)
		if id == "failing" {
			return errors.New("store down")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	return b, handled
}

// A handler that returns wire.ErrNotAnswered has handled the result and
// gets no answer sent for it: not done, not retry. The result is not
// published again by anyone, and the answers to others go as before.
func TestNotAnsweredResultsGetNoAnswer(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	b.SetDurable(true)
	var handled counts
	stop, err := b.ConsumeTree(wire.SubjectResult, "results", func(_ string, p *pb.BusPacket, replyTo string) error {
		id := p.GetJobResult().GetJobId()
		handled.add(id)
		if id == "quiet" {
			return fmt.Errorf("reply %s: %w", replyTo, wire.ErrNotAnswered)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop() }()

	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got := subscribeAnswers(t, worker)
	flush(t, worker)
	if err := worker.PublishAnswered(wire.ResultSubject("w1"), resultPacket("quiet", "w1"), inbox+".1", ""); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the quiet result handled", func() bool { return handled.get("quiet") == 1 })
	// Handled before the next is published: its answer, had it one, would
	// have gone before the next's.
	if err := worker.PublishAnswered(wire.ResultSubject("w1"), resultPacket("a", "w1"), inbox+".2", ""); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the next result's answer", func() bool { return got.get(inbox+".2") == bus.AnswerDone })
	flush(t, worker)
	if a := got.get(inbox + ".1"); a != "" {
		t.Fatalf("the result its handler did not answer got %q", a)
	}
	if single, batches := got.kinds(); single != 1 || batches != 0 {
		t.Fatalf("%d answers alone and %d batches; want 1 and 0", single, batches)
	}
	if n := handled.get("quiet"); n != 1 {
		t.Fatalf("the quiet result was handled %d times; want 1", n)
	}
}

// streamMsgs is how many messages the stream that captures subject holds.
func streamMsgs(t *testing.T, b *bus.NatsBus, subject string) uint64 {
	t.Helper()
	js, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	st, err := js.Stream(ctx, bus.StreamName(subject))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Over core NATS (the memory store) a result published for an answer is
// handled as any other, and answered not-stored: its sender has nothing to
// wait for.
func TestAnsweredResultOverCoreNATS(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	handled := consumeResults(t, b)
	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got := subscribeAnswers(t, worker)
	flush(t, worker)
	if err := worker.PublishAnswered(wire.SubjectResult, resultPacket("a", "w1"), inbox+".1", ""); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the answer", func() bool { return got.get(inbox+".1") == bus.AnswerNotStored })
	if handled.get("a") != 1 {
		t.Fatalf("handled %d times; want 1", handled.get("a"))
	}
}

// An answer is a BusPacket carrying a JobAnswer, as everything on the bus is
// Protobuf; bytes that are not one are ignored (the result is then published
// again when its answer does not come), never taken for an answer.
func TestAnswersAreJobAnswerPackets(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]*pb.JobAnswer{
		bus.AnswerDone:      {Ok: true},
		bus.AnswerRetry:     {Retryable: true},
		bus.AnswerNotStored: {},
	} {
		var p pb.BusPacket
		if err := proto.Unmarshal(bus.AnswerPacket(name), &p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a := p.GetJobAnswer()
		if a == nil || a.GetOk() != want.GetOk() || a.GetRetryable() != want.GetRetryable() {
			t.Fatalf("%s: answer %v; want ok=%v retryable=%v", name, a, want.GetOk(), want.GetRetryable())
		}
	}

	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got := subscribeAnswers(t, b)
	flush(t, b)
	nc := natstest.Conn(t, srv.URL())
	for i, data := range [][]byte{[]byte("done"), {0xff, 0x01}, mustMarshal(t, &pb.BusPacket{Payload: &pb.BusPacket_JobAck{JobAck: &pb.JobAck{JobId: "x"}}})} {
		if err := nc.Publish(fmt.Sprintf("%s.bad%d", inbox, i), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(inbox+".good", bus.AnswerPacket(bus.AnswerRetry)); err != nil {
		t.Fatal(err)
	}
	// Published last on one connection, the good answer arrives last.
	systest.Eventually(t, waitFor, "the good answer", func() bool { return got.get(inbox+".good") == bus.AnswerRetry })
	for i := range 3 {
		if a := got.get(fmt.Sprintf("%s.bad%d", inbox, i)); a != "" {
			t.Fatalf("bad answer %d taken as %q", i, a)
		}
	}
}

// A result asking for its answer on a subject that is not an inbox gets none:
// a worker cannot make a scheduler publish on a system subject. The result is
// still handled.
func TestAnswerGoesOnlyToAnInbox(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	handled := consumeResults(t, b)
	nc := natstest.Conn(t, srv.URL())
	var onSubmit atomic.Int32
	sub, err := nc.Subscribe(wire.SubjectSubmit, func(*nats.Msg) { onSubmit.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	if err := worker.PublishAnswered(wire.SubjectResult, resultPacket("a", "w1"), wire.SubjectSubmit, ""); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the result handled", func() bool { return handled.get("a") == 1 })
	flush(t, b) // the answer, had one been sent, is at the server now
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := onSubmit.Load(); n != 0 {
		t.Fatalf("%d answers published on %s; want none", n, wire.SubjectSubmit)
	}
}

// consumeResults counts, by job id, the results b's ConsumeTree handles
// until the test ends.
func consumeResults(t *testing.T, b *bus.NatsBus) *counts {
	t.Helper()
	var handled counts
	stop, err := b.ConsumeTree(wire.SubjectResult, "results", func(_ string, p *pb.BusPacket, _ string) error {
		handled.add(p.GetJobResult().GetJobId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	flush(t, b)
	return &handled
}

// Each packet published for an answer carries its own headers: the reply
// inbox given, the stream name of its kind, and a traceparent only when it
// has one (the header a publish is built in is reused).
func TestAnsweredHeadersAreEachPublishsOwn(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	b.EnableTraceHeaders()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("answered.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	traced := resultPacket("traced", "w1")
	b.SetTraceparent(traced.GetTraceId(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	plain := resultPacket("plain", "w1")
	plain.TraceId = "another"
	if err := b.PublishAnswered("answered.result", traced, "_INBOX.x.1", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishAnswered("answered.result", plain, "_INBOX.x.2", ""); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishAnsweredSubmit("answered.submit", jobPacket("j"), "_INBOX.x.3"); err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	for _, want := range []struct{ reply, stream, tp string }{
		{"_INBOX.x.1", bus.AnsweredStream, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"_INBOX.x.2", bus.AnsweredStream, ""},
		{"_INBOX.x.3", bus.AnsweredSubmitStream, ""},
	} {
		m, err := sub.NextMsg(waitFor)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get(wire.HeaderReplyTo); got != want.reply {
			t.Errorf("%s: reply header %q, want %q", m.Subject, got, want.reply)
		}
		if got := m.Header.Get("Nats-Expected-Stream"); got != want.stream {
			t.Errorf("%s: stream header %q, want %q", m.Subject, got, want.stream)
		}
		if got := m.Header.Get(bus.HeaderTraceparent); got != want.tp {
			t.Errorf("%s (%s): traceparent %q, want %q", m.Subject, want.reply, got, want.tp)
		}
		if len(m.Header) != 2+min(len(want.tp), 1) {
			t.Errorf("%s: headers %v", m.Subject, m.Header)
		}
	}
}
