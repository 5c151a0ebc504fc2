package bench

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/wire"
)

// The load generator does with an answer what client.Submit does: a job
// answered retryable is published again plainly, once, still asking for
// its answer; a refusal is counted; an answer for no job of its own is
// foreign.
func TestDriverAnswers(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	nc := natstest.Conn(t, url)
	var plain, marked atomic.Int32
	var lastReply atomic.Value
	sub, err := nc.Subscribe("bench.test.submit", func(m *nats.Msg) {
		if m.Header.Get(jetstream.ExpectedStreamHeader) != "" {
			marked.Add(1)
			return
		}
		lastReply.Store(m.Header.Get(wire.HeaderReplyTo))
		plain.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := natstest.Conn(t, url)
	tr := newTracker("bench-x-s-", 10)
	d := &driver{tr: tr, nc: pub, subject: "bench.test.submit", answers: "_INBOX.bench",
		resubEnc: newEncoder(tr, "cortex-bench-client", "job.bench.x", "")}

	d.onAnswer("_INBOX.bench.3", bus.AnswerRetry, nil)
	d.onAnswer("_INBOX.bench.3", bus.AnswerRetry, nil) // once only
	d.onAnswer("_INBOX.bench.4", bus.AnswerDone, nil)
	d.onAnswer("_INBOX.bench.5", bus.AnswerNotStored, nil)
	d.onAnswer("_INBOX.bench.x", bus.AnswerRetry, nil)
	d.onAnswer("_INBOX.bench.99", bus.AnswerRetry, nil)
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, 10*time.Second, "the plain resubmission", func() bool { return plain.Load() == 1 })
	if err := pub.Flush(); err != nil { // anything more would be at the server now
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if p, m := plain.Load(), marked.Load(); p != 1 || m != 0 {
		t.Errorf("published %d plain, %d marked; want 1, 0", p, m)
	}
	if r := lastReply.Load(); r != "_INBOX.bench.3" {
		t.Errorf("resubmission asks its answer on %v; want _INBOX.bench.3", r)
	}
	if n := d.resubmits.Load(); n != 1 {
		t.Errorf("resubmits %d; want 1", n)
	}
	if n := d.refused.Load(); n != 1 {
		t.Errorf("refused %d; want 1", n)
	}
	if n := d.foreign.Load(); n != 2 {
		t.Errorf("foreign %d; want 2", n)
	}
}
