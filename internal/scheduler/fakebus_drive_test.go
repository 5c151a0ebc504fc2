package scheduler_test

import (
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// ---- injecting packets into the engine ----

// find returns the live subscription of kind on subject.
func (f *fakeBus) find(t testing.TB, kind subKind, subject string) *subscription {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.subs) - 1; i >= 0; i-- {
		s := f.subs[i]
		if s.kind == kind && s.subject == subject {
			return s
		}
	}
	t.Fatalf("no %s subscription on %s", kind, subject)
	return nil
}

// submit delivers a submission through the engine's Consume handler, with
// replyTo as the sender's answer subject. It returns the handler's error
// (non-nil: redeliver).
func (f *fakeBus) submit(t testing.TB, p *pb.BusPacket, replyTo string) error {
	t.Helper()
	return f.consume(t, wire.SubjectSubmit, p, replyTo)
}

// result delivers a result through the engine's results consumer, on the
// subject its worker publishes on (sys.job.result.<worker_id>; the bare
// sys.job.result for a result that names no worker).
func (f *fakeBus) result(t testing.TB, p *pb.BusPacket) error {
	t.Helper()
	on := wire.SubjectResult
	if w := p.GetJobResult().GetWorkerId(); w != "" {
		on = wire.ResultSubject(w)
	}
	return f.resultOn(t, on, p)
}

// resultOn delivers a result packet through the engine's results consumer
// as if it came on subject.
func (f *fakeBus) resultOn(t testing.TB, subject string, p *pb.BusPacket) error {
	t.Helper()
	return f.consumeOn(t, wire.SubjectResult, subject, p, "")
}

func (f *fakeBus) consume(t testing.TB, subject string, p *pb.BusPacket, replyTo string) error {
	t.Helper()
	return f.consumeOn(t, subject, subject, p, replyTo)
}

// consumeOn delivers p to the consumer of subject as if it came on on.
func (f *fakeBus) consumeOn(t testing.TB, subject, on string, p *pb.BusPacket, replyTo string) error {
	t.Helper()
	s := f.find(t, kindConsume, subject)
	if !s.enter() {
		t.Fatalf("delivery to the drained consumer of %s", subject)
	}
	defer s.inflight.Done()
	if s.consumeFrom != nil {
		return s.consumeFrom(on, clonePacket(p), replyTo)
	}
	return s.consume(clonePacket(p), replyTo)
}

// heartbeat delivers a heartbeat packet to the engine's heartbeat
// subscription, on the subject its worker publishes on.
func (f *fakeBus) heartbeat(t testing.TB, hb *pb.Heartbeat) {
	t.Helper()
	f.heartbeatOn(t, wire.WorkerHeartbeatSubject("test", hb.GetWorkerId()),
		wire.HeartbeatPacket("hb-"+hb.GetWorkerId(), hb.GetWorkerId(), proto.Clone(hb).(*pb.Heartbeat)))
}

// heartbeatOn delivers p to the engine's heartbeat subscription as if it
// came on subject.
func (f *fakeBus) heartbeatOn(t testing.TB, subject string, p *pb.BusPacket) {
	t.Helper()
	s := f.find(t, kindSubscribe, wire.SubjectHeartbeats)
	if !s.enter() {
		t.Fatal("heartbeat to a drained subscription")
	}
	defer s.inflight.Done()
	if s.from != nil {
		s.from(subject, clonePacket(p))
		return
	}
	s.handler(clonePacket(p))
}

// ask delivers a request to the engine's server of subject, as an
// anonymous client answered on its inbox, and returns its answer.
func (f *fakeBus) ask(t testing.TB, subject string, p *pb.BusPacket) *pb.BusPacket {
	t.Helper()
	return f.askOn(t, subject, subject, "_INBOX.fake.1", p)
}

// askOn delivers a request to the engine's server of subject (the bare
// sys.job.query or sys.job.cancel) as if it came on on with the NATS reply
// subject reply, and returns its answer (nil: none).
func (f *fakeBus) askOn(t testing.TB, subject, on, reply string, p *pb.BusPacket) *pb.BusPacket {
	t.Helper()
	s := f.find(t, kindServe, subject)
	if !s.enter() {
		t.Fatalf("request to the drained server of %s", subject)
	}
	defer s.inflight.Done()
	return clonePacket(s.serve(on, reply, clonePacket(p), nil))
}

// reply delivers p (or "no responders") on a reply subject, as a late or
// unexpected answer to a dispatch would arrive.
func (f *fakeBus) reply(t testing.TB, subject string, p *pb.BusPacket, noResponders bool) {
	t.Helper()
	f.mu.Lock()
	s := f.repliesFor(subject)
	f.mu.Unlock()
	if s == nil {
		t.Fatalf("no replies subscription for %s", subject)
	}
	done := make(chan struct{})
	if !s.enqueue(func() { defer close(done); s.replies(subject, clonePacket(p), noResponders) }) {
		t.Fatalf("the replies subscription for %s was drained", subject)
	}
	<-done
}

// ---- what the engine did ----

func (f *fakeBus) publishes() []published {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]published(nil), f.published...)
}

// publishedOn returns the packets published on subject.
func (f *fakeBus) publishedOn(subject string) []*pb.BusPacket {
	var out []*pb.BusPacket
	for _, p := range f.publishes() {
		if p.subject == subject {
			out = append(out, p.packet)
		}
	}
	return out
}

// dispatches returns the requests published (the dispatches), in order.
func (f *fakeBus) dispatches() []published {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]published(nil), f.requests...)
}

// dispatchesOf returns the dispatched requests of one job, in order.
func (f *fakeBus) dispatchesOf(jobID string) []published {
	var out []published
	for _, d := range f.dispatches() {
		if d.packet.GetJobRequest().GetJobId() == jobID {
			out = append(out, d)
		}
	}
	return out
}

func (f *fakeBus) subscriptions() []*subscription {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*subscription(nil), f.subs...)
}

func (f *fakeBus) drainCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drained
}

// close marks the engine stopped: publishing from now on is a violation.
func (f *fakeBus) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

func (f *fakeBus) violated() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.violations...)
}

// logBuffer captures a text logger's output.
type logBuffer struct{ logging.Buffer }

func (l *logBuffer) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level}))
}
