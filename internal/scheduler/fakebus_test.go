package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// fakeBus is an in-memory scheduler.Bus for the engine's logic, without NATS.
//
// It records every publish, request and subscription. It delivers nothing by
// itself: a test injects packets into the engine's handlers (submit, result,
// heartbeat, query, cancel) through the helpers below, as a NATS delivery
// goroutine would. The answer to each dispatch (PublishRequest) is scripted:
// per subject, a queue of responders used one per call, then a fallback. A
// responder's answer comes back on the dispatch's reply subject through the
// engine's SubscribeReplies handler, asynchronously and in order, as NATS
// delivers it.
//
// Packets are cloned on the way in and out, as encoding them would: the
// engine never shares memory with the test.
type fakeBus struct {
	mu         sync.Mutex
	published  []published
	requests   []published
	subs       []*subscription
	drained    int
	publishErr error
	failOn     string // subscribing to this subject fails

	scripts   map[string][]responder // per subject, used first, one per call
	fallbacks map[string]responder   // per subject; "" for any subject

	// violations are things the engine must never do, noted as they happen.
	violations []string
	// closed is set by a test once the engine has stopped: nothing may be
	// published after.
	closed bool

	replies sync.WaitGroup // answers being delivered

	// inboxPrefix is what InboxPrefix says: the engine answers no request
	// under it.
	inboxPrefix string
}

// InboxPrefix is the connection's inbox prefix, as bus.NatsBus has it.
func (f *fakeBus) InboxPrefix() string { return f.inboxPrefix }

// Flush: the fake has no server; what it delivers, it delivers in order.
func (f *fakeBus) Flush(context.Context) error { return nil }

// Backlog: the fake delivers every packet at once; nothing waits.
func (f *fakeBus) Backlog(context.Context, string) (int, error) { return 0, nil }

type published struct {
	subject, reply string
	packet         *pb.BusPacket
	at             time.Time
}

type subKind string

const (
	kindSubscribe subKind = "subscribe"
	kindReplies   subKind = "replies"
	kindServe     subKind = "serve"
	kindConsume   subKind = "consume"
)

type subscription struct {
	kind           subKind
	subject, queue string // queue: the queue group, or the durable name of Consume
	handler        func(*pb.BusPacket)
	replies        func(subject string, p *pb.BusPacket, noResponders bool)
	serve          func(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket // ServeTree
	consume        func(p *pb.BusPacket, replyTo string) error
	from           func(subject string, p *pb.BusPacket)                       // SubscribeWithSubject
	consumeFrom    func(subject string, p *pb.BusPacket, replyTo string) error // ConsumeTree

	drainDelay time.Duration // how long draining takes, as a round trip to a server would

	mu       sync.Mutex
	isDrain  bool
	inflight sync.WaitGroup
	queued   chan func() // replies: delivered one at a time, in order
	done     chan struct{}
}

// ---- the Bus interface ----

func (f *fakeBus) Publish(subject string, p *pb.BusPacket) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.publishErr != nil {
		return f.publishErr
	}
	if f.closed {
		f.violations = append(f.violations, "Publish on "+subject+" after the engine stopped")
	}
	subject = strings.Clone(subject) // the engine may reuse its bytes once this returns
	f.published = append(f.published, published{subject: subject, packet: clonePacket(p), at: time.Now()})
	return nil
}

func (f *fakeBus) PublishRequest(subject, reply string, p *pb.BusPacket) error {
	reply = strings.Clone(reply) // the engine reuses its bytes once this returns
	f.mu.Lock()
	if f.publishErr != nil {
		f.mu.Unlock()
		return f.publishErr
	}
	if f.closed {
		f.violations = append(f.violations, fmt.Sprintf("PublishRequest on %s after the engine stopped", subject))
	}
	sub := f.repliesFor(reply)
	if sub == nil {
		f.violations = append(f.violations, fmt.Sprintf("PublishRequest on %s with reply %s, which nobody hears (the replies subscription is drained or missing)", subject, reply))
	}
	req := clonePacket(p)
	f.requests = append(f.requests, published{subject: subject, reply: reply, packet: req, at: time.Now()})
	r := f.next(subject)
	f.mu.Unlock()

	a := r(subject, req)
	if a.hold != nil {
		<-a.hold
	}
	if a.publishErr != nil {
		return a.publishErr
	}
	if sub == nil || a.silent {
		return nil
	}
	f.replies.Add(1)
	deliver := func() {
		defer f.replies.Done()
		if a.gate != nil {
			<-a.gate
		}
		sub.enqueue(func() { sub.replies(reply, clonePacket(a.packet), a.noResponders) })
	}
	if a.gate != nil {
		go deliver()
	} else {
		deliver()
	}
	return nil
}

func (f *fakeBus) Subscribe(subject, queue string, h func(*pb.BusPacket)) (func() error, error) {
	return f.add(&subscription{kind: kindSubscribe, subject: subject, queue: queue, handler: h})
}

func (f *fakeBus) SubscribeReplies(subject string, h func(subject string, p *pb.BusPacket, noResponders bool)) (func() error, error) {
	s := &subscription{kind: kindReplies, subject: subject, replies: h, queued: make(chan func(), 1024), done: make(chan struct{})}
	drain, err := f.add(s)
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(s.done)
		for fn := range s.queued {
			fn()
		}
	}()
	return drain, nil
}

func (f *fakeBus) ServeTree(subject, queue string, h func(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket) (func() error, error) {
	return f.add(&subscription{kind: kindServe, subject: subject, queue: queue, serve: h})
}

func (f *fakeBus) Consume(subject, durable string, h func(p *pb.BusPacket, replyTo string) error) (func() error, error) {
	return f.add(&subscription{kind: kindConsume, subject: subject, queue: durable, consume: h})
}

func (f *fakeBus) SubscribeWithSubject(subject, queue string, h func(subject string, p *pb.BusPacket)) (func() error, error) {
	return f.add(&subscription{kind: kindSubscribe, subject: subject, queue: queue, from: h})
}

func (f *fakeBus) ConsumeTree(subject, durable string, h func(subject string, p *pb.BusPacket, replyTo string) error) (func() error, error) {
	return f.add(&subscription{kind: kindConsume, subject: subject, queue: durable, consumeFrom: h})
}

func (f *fakeBus) add(s *subscription) (func() error, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.subject == f.failOn {
		return nil, errors.New("subscribe refused")
	}
	if s.subject == "" || (s.handler == nil && s.replies == nil && s.serve == nil && s.consume == nil && s.from == nil && s.consumeFrom == nil) {
		return nil, errors.New("fake bus: empty subject or nil handler")
	}
	f.subs = append(f.subs, s)
	var once sync.Once
	return func() error {
		once.Do(func() {
			s.mu.Lock()
			s.isDrain = true
			s.mu.Unlock()
			time.Sleep(s.drainDelay)
			s.inflight.Wait() // the handler finishes what it holds
			if s.queued != nil {
				close(s.queued)
				<-s.done
			}
			f.mu.Lock()
			f.drained++
			f.mu.Unlock()
		})
		return nil
	}, nil
}

// enqueue hands a reply to the subscription's delivery goroutine; a drained
// subscription drops it, as NATS would, and enqueue returns false.
func (s *subscription) enqueue(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isDrain {
		return false
	}
	s.queued <- fn
	return true
}

// enter starts a delivery to s; false if s is drained.
func (s *subscription) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isDrain {
		return false
	}
	s.inflight.Add(1)
	return true
}

// repliesFor is the live replies subscription matching subject. f.mu is held.
func (f *fakeBus) repliesFor(subject string) *subscription {
	for _, s := range f.subs {
		if s.kind != kindReplies || !subjectMatches(s.subject, subject) {
			continue
		}
		s.mu.Lock()
		live := !s.isDrain
		s.mu.Unlock()
		if live {
			return s
		}
	}
	return nil
}

// subjectMatches reports whether subject matches pattern, with NATS's * and >.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func clonePacket(p *pb.BusPacket) *pb.BusPacket {
	if p == nil {
		return nil
	}
	return proto.Clone(p).(*pb.BusPacket)
}

// ---- scripting the answers to dispatches ----

// answer is what comes back for one dispatch.
type answer struct {
	packet       *pb.BusPacket
	noResponders bool
	silent       bool          // nothing comes back: no confirmation in time
	publishErr   error         // the publish itself fails
	gate         chan struct{} // the answer comes back once this is closed
	hold         chan struct{} // the publish itself returns once this is closed
}

// responder decides the answer to one dispatch.
type responder func(subject string, req *pb.BusPacket) answer

// ackBy confirms the dispatched attempt as workerID, as pkg/worker does.
func ackBy(workerID string) responder {
	return func(_ string, req *pb.BusPacket) answer {
		r := req.GetJobRequest()
		p := wire.NewPacket(req.GetTraceId(), workerID)
		p.Payload = &pb.BusPacket_JobAck{JobAck: &pb.JobAck{JobId: r.GetJobId(), Attempt: r.GetAttempt(), WorkerId: workerID}}
		return answer{packet: p}
	}
}

// noResponders is the server's answer when nobody is subscribed.
func noResponders() responder {
	return func(string, *pb.BusPacket) answer { return answer{noResponders: true} }
}

// silence is a subscriber that never answers: a worker of the design
// document, or one that died with the job.
func silence() responder {
	return func(string, *pb.BusPacket) answer { return answer{silent: true} }
}

// refuseBy is a worker refusing the job before it starts.
func refuseBy(workerID, reason string) responder {
	return func(_ string, req *pb.BusPacket) answer {
		p := wire.NewPacket(req.GetTraceId(), workerID)
		p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Error: reason, Retryable: true}}
		return answer{packet: p}
	}
}

// failPublish makes the dispatch's publish fail.
func failPublish(err error) responder {
	return func(string, *pb.BusPacket) answer { return answer{publishErr: err} }
}

// gated holds r's answer until gate is closed.
func gated(gate chan struct{}, r responder) responder {
	return func(subject string, req *pb.BusPacket) answer {
		a := r(subject, req)
		a.gate = gate
		return a
	}
}

// held makes the publish of r's dispatch block until hold is closed, as a
// publish stuck on a full connection would.
func held(hold chan struct{}, r responder) responder {
	return func(subject string, req *pb.BusPacket) answer {
		a := r(subject, req)
		a.hold = hold
		return a
	}
}

// script queues responders for the next dispatches on subject ("" for any).
func (f *fakeBus) script(subject string, rs ...responder) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.scripts == nil {
		f.scripts = make(map[string][]responder)
	}
	f.scripts[subject] = append(f.scripts[subject], rs...)
}

// fallback answers the dispatches on subject ("" for any) once its script is
// used up.
func (f *fakeBus) fallback(subject string, r responder) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fallbacks == nil {
		f.fallbacks = make(map[string]responder)
	}
	f.fallbacks[subject] = r
}

// next is the responder for a dispatch on subject. f.mu is held.
func (f *fakeBus) next(subject string) responder {
	for _, key := range []string{subject, ""} {
		if q := f.scripts[key]; len(q) > 0 {
			f.scripts[key] = q[1:]
			return q[0]
		}
	}
	if r := f.fallbacks[subject]; r != nil {
		return r
	}
	if r := f.fallbacks[""]; r != nil {
		return r
	}
	return noResponders()
}
