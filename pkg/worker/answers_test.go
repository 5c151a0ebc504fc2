package worker_test

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// A result is published for a scheduler's answer; answered, it is not
// published again.
func TestAnsweredResultIsPublishedOnce(t *testing.T) {
	answeredOnce(t, func(e *env, m *nats.Msg) {
		_ = e.observer.Conn().Publish(m.Header.Get(wire.HeaderReplyTo), bus.AnswerPacket(bus.AnswerDone))
	})
}

// A result asks to be answered in a batch too (wire.HeaderAnswerBatch); a
// batched answer that lists it takes it off the list as its own answer
// would.
func TestBatchedAnswerTakesTheResult(t *testing.T) {
	answeredOnce(t, func(e *env, m *nats.Msg) {
		reply, batchTo := m.Header.Get(wire.HeaderReplyTo), m.Header.Get(wire.HeaderAnswerBatch)
		n, err := strconv.ParseUint(reply[strings.LastIndexByte(reply, '.')+1:], 10, 64)
		if err != nil || batchTo == "" {
			t.Errorf("reply subject %q, batch subject %q: want <prefix>.<n> and a batch subject", reply, batchTo)
			return
		}
		data, err := proto.Marshal(&pb.BusPacket{Payload: &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Answered: []uint64{n + 1000, n}}}})
		if err == nil {
			err = e.observer.Conn().Publish(batchTo, data)
		}
		if err != nil {
			t.Error(err)
		}
	})
}

// answeredOnce runs a job whose result answer answers (as a scheduler on
// the JetStream store would), and checks that the answer took the result
// off the worker's list and that it was published once.
func answeredOnce(t *testing.T, answer func(e *env, m *nats.Msg)) {
	t.Helper()
	worker.SetAnswerTimeout(t, 300*time.Millisecond)
	e := newEnv(t, "echo")
	sub, err := e.observer.Conn().Subscribe(wire.SubjectResult, func(m *nats.Msg) {
		if m.Header.Get(jetstream.ExpectedStreamHeader) == bus.AnsweredStream {
			answer(e, m)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	flush(t, e.observer)
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	e.send(t, "j1")
	e.results.waitResult(t, "j1")
	// Answered, the result has left the worker's list: nothing can publish
	// it again. A second job's result, on the same connection, then comes
	// after anything the worker published for the first.
	systest.Eventually(t, waitFor, "the answer to take the result off the list", func() bool {
		pending, resolved := worker.Answers(r.w)
		return pending == 0 && resolved == 1
	})
	e.send(t, "j2")
	e.results.waitResult(t, "j2")
	if n := len(e.results.results("j1")); n != 1 {
		t.Fatalf("the result was published %d times; want 1", n)
	}
}

// A result nobody answers (no scheduler runs) is published again, plainly,
// for the result stream to keep.
func TestUnansweredResultIsPublishedAgain(t *testing.T) {
	worker.SetAnswerTimeout(t, 300*time.Millisecond)
	e := newEnv(t, "echo")
	var plain, marked atomic.Int32
	sub, err := e.observer.Conn().Subscribe(wire.SubjectResult, func(m *nats.Msg) {
		if m.Header.Get(jetstream.ExpectedStreamHeader) == bus.AnsweredStream {
			marked.Add(1)
		} else {
			plain.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	flush(t, e.observer)
	e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	e.send(t, "j1")
	systest.Eventually(t, waitFor, "the result, then again plainly", func() bool { return marked.Load() == 1 && plain.Load() == 1 })
	// Unanswered once, the worker publishes plainly for a while.
	e.send(t, "j2")
	systest.Eventually(t, waitFor, "the second result, plainly", func() bool { return plain.Load() == 2 })
	if marked.Load() != 1 {
		t.Fatalf("%d results published for an answer; want 1", marked.Load())
	}
}
