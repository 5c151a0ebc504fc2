package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// jobAnswers collects the JobAnswers that arrive under an inbox, by
// subject; anything else counts as a stray.
type jobAnswers struct {
	mu     sync.Mutex
	m      map[string][]*pb.JobAnswer
	strays int
}

func collectAnswers(t *testing.T, nc *nats.Conn, subject string) *jobAnswers {
	t.Helper()
	a := &jobAnswers{m: map[string][]*pb.JobAnswer{}}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var p pb.BusPacket
		a.mu.Lock()
		defer a.mu.Unlock()
		if proto.Unmarshal(m.Data, &p) != nil || p.GetJobAnswer() == nil {
			a.strays++
			return
		}
		a.m[m.Subject] = append(a.m[m.Subject], p.GetJobAnswer())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *jobAnswers) on(subject string) []*pb.JobAnswer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*pb.JobAnswer(nil), a.m[subject]...)
}

func (a *jobAnswers) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.strays
	for _, l := range a.m {
		n += len(l)
	}
	return n
}

// publishMarked publishes raw bytes as PublishAnsweredSubmit would a packet.
func publishMarked(t *testing.T, nc *nats.Conn, subject string, data []byte, replyTo string) {
	t.Helper()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Data: data, Header: bus.AnsweredSubmitHeader(replyTo)}); err != nil {
		t.Fatal(err)
	}
}

// With a durable intake, a submission published for an answer is not
// stored by the intake stream: one replica's handler takes it over core
// NATS, with its reply subject, under the bare subject or below it. The
// handler answers it; the bus adds an answer only when the handler failed
// (retryable, once: nothing redelivers it) or the packet is garbage (a
// refusal). A plain submission still goes through the stream, once.
func TestAnsweredSubmissionsSkipTheStream(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url})
	b.SetDurable(true)
	var handled counts
	var got answers // the reply subject each submission was handed with
	stop, err := b.ConsumeTree(wire.SubjectSubmit, "submit", func(_ string, p *pb.BusPacket, replyTo string) error {
		id := p.GetJobRequest().GetJobId()
		handled.add(id)
		got.set(id, replyTo, nil)
		if id == "failing" {
			return errors.New("store down")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop() }()

	client := systest.ConnectWith(t, bus.Config{URL: url})
	nc := natstest.Conn(t, url)
	inbox := client.NewInbox()
	answers := collectAnswers(t, nc, inbox+".*")
	for _, id := range []string{"a", "failing"} {
		if err := client.PublishAnsweredSubmit(wire.SubjectSubmit, jobPacket(id), inbox+"."+id); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.PublishAnsweredSubmit(wire.SubjectSubmit+".c1", jobPacket("below"), inbox+".below"); err != nil {
		t.Fatal(err)
	}
	publishMarked(t, nc, wire.SubjectSubmit, []byte{0xff, 0x01}, inbox+".garbage")
	if err := client.PublishReplyTo(wire.SubjectSubmit, jobPacket("plain"), inbox+".plain"); err != nil {
		t.Fatal(err)
	}
	flush(t, client)
	systest.Eventually(t, waitFor, "the submissions handled and the answers", func() bool {
		return handled.get("a") == 1 && handled.get("below") == 1 && handled.get("plain") == 1 &&
			len(answers.on(inbox+".failing")) == 1 && len(answers.on(inbox+".garbage")) == 1
	})
	for _, id := range []string{"a", "failing", "below", "plain"} {
		if r := got.get(id); r != inbox+"."+id {
			t.Errorf("%s handed with reply %q; want %q", id, r, inbox+"."+id)
		}
	}
	if a := answers.on(inbox + ".failing")[0]; !a.GetRetryable() || a.GetOk() || a.GetError() != bus.SubmitRetryError {
		t.Errorf("answer to a failed handler: %v; want retryable, %q", a, bus.SubmitRetryError)
	}
	if a := answers.on(inbox + ".garbage")[0]; a.GetRetryable() || a.GetOk() || a.GetError() == "" {
		t.Errorf("answer to garbage: %v; want a refusal, not retryable", a)
	}
	// The bus sent its answers after the handlers returned: the handler's
	// own (here none) would have come before. Nothing else was sent.
	flush(t, b)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := answers.total(); n != 2 {
		t.Errorf("%d answers; want 2 (failing, garbage): the bus answers nothing its handler decided", n)
	}
	if n := handled.get("failing"); n != 1 {
		t.Errorf("failing handled %d times; want once (its sender publishes it again)", n)
	}

	if n := streamMsgs(t, b, wire.SubjectSubmit); n != 1 {
		t.Fatalf("the intake stream holds %d messages; want 1 (the plain submission)", n)
	}
}

// Backlog counts a submission published for an answer while a replica
// holds it, and plain submissions (which the core subscription receives
// too, and leaves to the stream) do not stay counted: it returns to 0.
func TestBacklogCountsAnsweredSubmissions(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url})
	b.SetDurable(true)
	release := make(chan struct{})
	var handled counts
	stop, err := b.ConsumeTree(wire.SubjectSubmit, "backlog-answered", func(_ string, p *pb.BusPacket, _ string) error {
		if p.GetJobRequest().GetJobId() == "held" {
			<-release
		}
		handled.add(p.GetJobRequest().GetJobId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop() }()
	flush(t, b)
	ctx := context.Background()
	client := systest.ConnectWith(t, bus.Config{URL: url})
	inbox := client.NewInbox()
	if err := client.PublishAnsweredSubmit(wire.SubjectSubmit, jobPacket("held"), inbox+".held"); err != nil {
		t.Fatal(err)
	}
	flush(t, client)
	systest.Eventually(t, waitFor, "the held submission counted", func() bool {
		n, err := b.Backlog(ctx, wire.SubjectSubmit)
		return err == nil && n == 1
	})
	for _, id := range []string{"p1", "p2"} {
		if err := client.Publish(wire.SubjectSubmit, jobPacket(id)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, client)
	systest.Eventually(t, waitFor, "the plain submissions handled", func() bool { return handled.get("p1") == 1 && handled.get("p2") == 1 })
	if n, err := b.Backlog(ctx, wire.SubjectSubmit); err != nil || n < 1 {
		t.Fatalf("Backlog with the held submission in its handler = %d, %v; want it counted", n, err)
	}
	close(release)
	systest.Eventually(t, waitFor, "no backlog once handled", func() bool {
		n, err := b.Backlog(ctx, wire.SubjectSubmit)
		return err == nil && n == 0
	})
}

// Over core NATS (the memory store) a submission published for an answer
// is handled as any other, with its reply subject; the bus sends it no
// answer of its own (the not-stored answer is for results): admission's
// answer is the only one.
func TestAnsweredSubmissionOverCoreNATS(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url})
	var handled counts
	var got answers // the reply subject each submission was handed with
	stop, err := b.ConsumeTree(wire.SubjectSubmit, "submit", func(_ string, p *pb.BusPacket, replyTo string) error {
		handled.add(p.GetJobRequest().GetJobId())
		got.set(p.GetJobRequest().GetJobId(), replyTo, nil)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop() }()
	flush(t, b)
	client := systest.ConnectWith(t, bus.Config{URL: url})
	nc := natstest.Conn(t, url)
	inbox := client.NewInbox()
	answers := collectAnswers(t, nc, inbox+".*")
	if err := client.PublishAnsweredSubmit(wire.SubjectSubmit, jobPacket("a"), inbox+".a"); err != nil {
		t.Fatal(err)
	}
	flush(t, client)
	systest.Eventually(t, waitFor, "the submission handled", func() bool { return handled.get("a") == 1 })
	if r := got.get("a"); r != inbox+".a" {
		t.Errorf("handed with reply %q; want %q", r, inbox+".a")
	}
	flush(t, b) // an answer, had the bus sent one, is at the server now
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := answers.total(); n != 0 {
		t.Fatalf("%d answers from the bus; want none", n)
	}
}

// The marker is the one the stream refuses: no stream has its name.
func TestAnsweredSubmitHeader(t *testing.T) {
	t.Parallel()
	h := bus.AnsweredSubmitHeader("_INBOX.x.1")
	if h.Get(jetstream.ExpectedStreamHeader) != bus.AnsweredSubmitStream || h.Get(wire.HeaderReplyTo) != "_INBOX.x.1" {
		t.Fatalf("header %v", h)
	}
	if bus.AnsweredSubmitStream == bus.StreamName(wire.SubjectSubmit) || bus.AnsweredSubmitStream == bus.AnsweredStream {
		t.Fatalf("marker %q names a real stream", bus.AnsweredSubmitStream)
	}
}
