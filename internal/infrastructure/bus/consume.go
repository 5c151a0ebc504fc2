package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// StreamName is the JetStream stream that captures subject for Consume:
// sys.job.submit -> CORTEX_JOB_SUBMIT.
func StreamName(subject string) string {
	return "CORTEX_" + strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(subject, "sys."), ".", "_"))
}

// Consume delivers the packets published on subject to one member of the
// group named durable. The handler gets the packet and replyTo, where the
// sender wants an answer ("" for none); its nil error acknowledges the packet,
// an error hands it back for redelivery. When durable (SetDurable), a JetStream stream
// captures the subject (so what is published while no consumer runs waits
// for one; EnsureStream) and durable is the stream's shared consumer: a
// packet is delivered again until a handler has returned nil for it. Without, it is a core NATS
// queue subscription. Malformed packets are counted and never redelivered.
// The returned stop function drains: it returns when the handler is idle.
//
// The packet is the handler's only until it returns: packets that carry a
// job request or a result are decoded into pooled memory that a later
// packet reuses (see decodeTransient). The handler may keep the JobRequest
// it carries, and strings; nothing else.
func (b *NatsBus) Consume(subject, durable string, handler func(p *pb.BusPacket, replyTo string) error) (stop func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	return b.consume([]string{subject}, durable, func(_ string, p *pb.BusPacket, replyTo string) error { return handler(p, replyTo) })
}

// ConsumeTree is Consume of subject and of every subject below it
// (subject.>), handing the handler the subject each packet came on. When
// durable, one stream, named after subject (StreamName), captures
// both; a stream that Consume made for subject alone is updated to capture
// both, keeping what it holds. The packet is the handler's as with Consume.
func (b *NatsBus) ConsumeTree(subject, durable string, handler func(subject string, p *pb.BusPacket, replyTo string) error) (stop func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	return b.consume([]string{subject, subject + ".>"}, durable, handler)
}

// consume is Consume over subjects; the stream is named after the first.
func (b *NatsBus) consume(subjects []string, durable string, handler func(subject string, p *pb.BusPacket, replyTo string) error) (func() error, error) {
	if !b.durable.Load() {
		var stops []func() error
		for _, subject := range subjects {
			stop, err := b.consumeCore(subject, durable, handler)
			if err != nil {
				for _, s := range stops {
					_ = s()
				}
				return nil, err
			}
			stops = append(stops, stop)
		}
		if len(stops) == 1 {
			return stops[0], nil
		}
		return func() error {
			var errs []error
			for _, s := range stops {
				errs = append(errs, s())
			}
			return errors.Join(errs...)
		}, nil
	}
	return b.consumeStream(subjects, durable, handler)
}

func (b *NatsBus) consumeCore(subject, queue string, handler func(subject string, p *pb.BusPacket, replyTo string) error) (func() error, error) {
	in := &coreIntake{}
	sub, err := b.nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		defer in.done.Add(1)
		packet, pooled, err := b.decodeIntake(m.Subject, m.Data)
		if err != nil {
			return
		}
		defer releaseIntakePacket(pooled)
		b.noteIncoming(m.Header, packet)
		replyTo := m.Header.Get(wire.HeaderReplyTo)
		if replyTo == "" {
			replyTo = m.Reply
		}
		var herr error
		b.call(m.Subject, packet, func(p *pb.BusPacket) { herr = handler(m.Subject, p, replyTo) })
		if herr != nil && !errors.Is(herr, wire.ErrNotAnswered) {
			b.log.Warn("handler failed; core NATS cannot redeliver", "subject", m.Subject, "err", herr)
		}
		if m.Header.Get(jetstream.ExpectedStreamHeader) == AnsweredStream && !errors.Is(herr, wire.ErrNotAnswered) {
			// Nothing here is stored: the sender need not wait for it.
			b.answerResult(m.Header.Get(wire.HeaderReplyTo), AnswerNotStored)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	in.sub = sub
	remove := b.intake.addCore(subject, in)
	return func() error { defer remove(); return b.drain(sub) }, nil
}

// The bounds of an intake stream (EnsureStream). Its messages are not
// removed when they are acknowledged (the durable consumer's ack floor says
// what was handled), so the stream is bounded instead: a message is dropped
// after IntakeMaxAge, or, oldest first, when the stream holds more than
// IntakeMaxBytes. What is dropped is normally long handled; a message still
// unhandled is lost only if no scheduler consumes for IntakeMaxAge, or if the
// backlog outgrows IntakeMaxBytes (docs/guarantees.md).
const (
	IntakeMaxAge   = 7 * 24 * time.Hour
	IntakeMaxBytes = 256 << 20
)

// EnsureStream creates or updates the intake stream that captures subject
// (and the more subjects, if any), named StreamName(subject).
//
// A new stream keeps its messages under limits (IntakeMaxAge,
// IntakeMaxBytes), not as a work queue: acknowledging a message does not
// remove it, which spares the server a removal and its tombstone write per
// message. Its one durable consumer's acknowledgements, which the server keeps
// with the consumer, decide what is delivered again. A stream made as a work
// queue by an earlier version stays one (the server cannot change a stream's
// retention): it is updated as such, and works as before (docs/guarantees.md
// says how to move it).
func (b *NatsBus) EnsureStream(ctx context.Context, subject string, more ...string) (jetstream.Stream, error) {
	js, err := b.JetStream()
	if err != nil {
		return nil, err
	}
	cfg := jetstream.StreamConfig{
		Name:        StreamName(subject),
		Description: "CortexOS: durable capture of " + strings.Join(append([]string{subject}, more...), ", "),
		Subjects:    append([]string{subject}, more...),
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      IntakeMaxAge,
		MaxBytes:    IntakeMaxBytes,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Duplicates:  2 * time.Minute,
		MaxMsgSize:  int32(b.cfg.MaxPacketBytes),
		Replicas:    max(b.cfg.Replicas, 1),
	}
	if old, err := js.Stream(ctx, cfg.Name); err == nil {
		if oc := old.CachedInfo().Config; oc.Retention == jetstream.WorkQueuePolicy {
			cfg.Retention, cfg.MaxAge, cfg.MaxBytes, cfg.Discard = oc.Retention, oc.MaxAge, oc.MaxBytes, oc.Discard
			b.log.Info("intake stream is a work queue, made by an earlier version; it stays one (docs/guarantees.md says how to move it)", "stream", cfg.Name)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bus: stream for %s: %w", subject, err)
	}
	stream, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: stream for %s (replicas %d; to change an existing stream by hand: nats stream edit %s --replicas %d): %w",
			subject, max(b.cfg.Replicas, 1), StreamName(subject), max(b.cfg.Replicas, 1), err)
	}
	return stream, nil
}

func (b *NatsBus) consumeStream(subjects []string, durable string, handler func(subject string, p *pb.BusPacket, replyTo string) error) (func() error, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject := subjects[0]
	stream, err := b.EnsureStream(ctx, subject, subjects[1:]...)
	if err != nil {
		return nil, err
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "CortexOS scheduler replicas",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 20000,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", durable, subject, err)
	}
	// The handler's work is mostly round trips to the store: a pool of
	// handlers keeps many in flight. Order across jobs does not matter; a
	// job's own packets are ordered by its state, not by arrival.
	msgs := make(chan intakeMsg)
	batcher := newAnswerBatcher(b) // closed once the handlers are done
	var pool sync.WaitGroup
	for range consumeParallel {
		pool.Go(func() {
			for m := range msgs {
				switch {
				case m.stream != nil:
					b.handleStreamMsg(m.stream, handler)
				case m.submit != nil:
					b.handleAnsweredSubmit(m.core, handler)
					m.submit.done.Add(1)
				default:
					b.handleAnswered(m.core, handler, batcher)
				}
			}
		})
	}
	// Results a scheduler is asked to answer (PublishAnswered) are not
	// stored by the stream: they come over core NATS, to one replica of
	// the group, which answers once it has handled them.
	// So do submissions a client waits for (PublishAnsweredSubmit): the
	// scheduler's own answer (the job as recorded) tells the client it is
	// kept; these subscriptions count in Backlog, as the stream does.
	var (
		answered []*nats.Subscription
		removes  []func()
	)
	stopAnswered := func() {
		for _, sub := range answered {
			_ = b.drain(sub)
		}
		for _, remove := range removes {
			remove()
		}
	}
	// abandon undoes a consume that fails to start.
	abandon := func() {
		stopAnswered()
		close(msgs)
		pool.Wait()
		batcher.close()
	}
	for _, s := range subjects {
		var (
			cb nats.MsgHandler
			in *coreIntake // counted by Backlog
		)
		switch subject {
		case wire.SubjectResult:
			cb = func(m *nats.Msg) {
				if m.Header.Get(jetstream.ExpectedStreamHeader) == AnsweredStream {
					msgs <- intakeMsg{core: m}
				}
			}
		case wire.SubjectSubmit:
			in = &coreIntake{}
			cb = func(m *nats.Msg) {
				if m.Header.Get(jetstream.ExpectedStreamHeader) != AnsweredSubmitStream {
					in.done.Add(1) // a plain submission: the stream delivers it
					return
				}
				msgs <- intakeMsg{core: m, submit: in} // done once handled
			}
		default:
			continue
		}
		sub, err := b.nc.QueueSubscribe(s, durable, cb)
		if err != nil {
			abandon()
			return nil, fmt.Errorf("bus: subscribe %s: %w", s, err)
		}
		answered = append(answered, sub)
		if in != nil {
			in.sub = sub
			removes = append(removes, b.intake.addCore(subject, in))
		}
	}
	// The server has the subscriptions before consume returns: a packet
	// published for an answer right after is not lost to the stream's
	// refusal.
	if err := b.nc.FlushWithContext(ctx); err != nil {
		abandon()
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { msgs <- intakeMsg{stream: m} },
		jetstream.PullMaxMessages(128), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				b.log.Warn("consume error", "subject", subject, "err", err)
			}
		}))
	if err != nil {
		abandon()
		return nil, fmt.Errorf("bus: consume %s: %w", subject, err)
	}
	remove := b.intake.addStream(subject, cons)
	return func() error {
		defer remove()
		stopAnswered() // unanswered, a result or a submission is published again for the stream
		cc.Drain()
		var err error
		select {
		case <-cc.Closed():
		case <-time.After(b.cfg.DrainTimeout):
			cc.Stop()
			err = fmt.Errorf("bus: drain of %s timed out", subject)
		}
		close(msgs)
		pool.Wait()
		batcher.close() // the answers still waiting go now
		return err
	}, nil
}

// consumeParallel is how many stream packets (and answered results and
// submissions) are handled at once. Each handler mostly waits for a store
// write: the more writes are in flight, the more the server stores per pass
// and the client sends per flush. On the reference machine
// (`cortex bench --store jetstream`, docs/BENCHMARKS.md) 128 ran about 5%
// more jobs a second than 64, at about 2% less CPU per job; 16 and 4 ran
// fewer, and 512 and 1024 spent more CPU on the handlers than they saved.
const consumeParallel = 128

// handleStreamMsg decodes and handles one stream message, then acknowledges
// it, asks for its redelivery, or (garbage) terminates it.
func (b *NatsBus) handleStreamMsg(m jetstream.Msg, handler func(subject string, p *pb.BusPacket, replyTo string) error) {
	packet, pooled, err := b.decodeIntake(m.Subject(), m.Data())
	if err != nil {
		_ = m.Term() // garbage stays garbage: never redeliver it
		return
	}
	defer releaseIntakePacket(pooled)
	var herr error
	b.noteIncoming(m.Headers(), packet)
	b.call(m.Subject(), packet, func(p *pb.BusPacket) { herr = handler(m.Subject(), p, m.Headers().Get(wire.HeaderReplyTo)) })
	if herr != nil && !errors.Is(herr, wire.ErrNotAnswered) {
		b.log.Warn("handler failed; redelivering", "subject", m.Subject(), "err", herr)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// JetStream returns the connection's JetStream context.
func (b *NatsBus) JetStream() (jetstream.JetStream, error) {
	js, err := jetstream.New(b.nc)
	if err != nil {
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	return js, nil
}

// HasJetStream reports whether the server has JetStream enabled for us.
func (b *NatsBus) HasJetStream(ctx context.Context) bool {
	js, err := b.JetStream()
	if err != nil {
		return false
	}
	_, err = js.AccountInfo(ctx)
	return err == nil
}

// intakeMsg is a message for consumeStream's handlers: one the stream
// delivered, or an answered result or submission over core NATS.
type intakeMsg struct {
	stream jetstream.Msg
	core   *nats.Msg
	submit *coreIntake // a submission: the subscription it came on, told when it is handled
}

// AnsweredStream is the stream a result published with PublishAnswered
// says it expects (the Nats-Expected-Stream header). No stream has this
// name, so the stream that captures the results (CORTEX_JOB_RESULT)
// refuses to store the message; its core NATS subscribers get it as
// always: the clients that read results, and one scheduler replica, which
// answers the sender once it has handled it (with the JetStream store:
// once the job's record is written). A result nobody answers must be
// published again without the header (Publish), and the stream keeps it.
const AnsweredStream = "CORTEX_ANSWERED_RESULT"

// AnsweredSubmitStream is AnsweredStream for submissions: the stream a
// submission published with PublishAnsweredSubmit says it expects. The
// intake stream (CORTEX_JOB_SUBMIT) refuses to store it; one scheduler
// replica takes it over core NATS and answers it as any submission, with
// the job once its record is written (a JobAnswer). Only when it could
// not decide (the store failed) does the bus answer for it, retryable
// (SubmitRetryError). A submission nobody answers must be published again
// without the header (PublishReplyTo), and the stream keeps it.
const AnsweredSubmitStream = "CORTEX_ANSWERED_SUBMIT"

// SubmitRetryError is the error of the retryable answer to a submission
// published with PublishAnsweredSubmit whose handler failed: nothing was
// decided, and the sender publishes it again for the stream.
const SubmitRetryError = "the job store write failed: publish the submission for the stream"

// PublishAnsweredSubmit publishes packet, a submission, on subject
// (sys.job.submit or below) for a scheduler to answer on replyTo, instead
// of having the intake stream store it (see AnsweredSubmitStream). The
// sender publishes it again with PublishReplyTo when no answer comes, or
// the answer is SubmitRetryError's.
func (b *NatsBus) PublishAnsweredSubmit(subject string, packet *pb.BusPacket, replyTo string) error {
	if err := b.checkSubjectLength(subject, len(replyTo)); err != nil {
		return err
	}
	return b.publishAnswered(subject, packet, AnsweredSubmitStream, replyTo, "")
}

// answeredHeader is the header of a PublishAnswered or
// PublishAnsweredSubmit, pooled with its values: one is built for every
// result or submission published for an answer, and the NATS client has
// encoded it into its own buffer by the time the publish returns.
type answeredHeader struct {
	h      nats.Header
	stream [1]string
	reply  [1]string
	batch  [1]string
}

var answeredHeaders = sync.Pool{New: func() any { return &answeredHeader{h: make(nats.Header, 3)} }}

// publishAnswered publishes packet on subject with the headers of a
// packet published for an answer: stream, which no stream has as its name
// (the stream of subject refuses to store it), replyTo and, if not empty,
// batchTo (wire.HeaderAnswerBatch).
func (b *NatsBus) publishAnswered(subject string, packet *pb.BusPacket, stream, replyTo, batchTo string) error {
	ah := answeredHeaders.Get().(*answeredHeader)
	ah.stream[0], ah.reply[0], ah.batch[0] = stream, replyTo, batchTo
	ah.h[jetstream.ExpectedStreamHeader] = ah.stream[:]
	ah.h[wire.HeaderReplyTo] = ah.reply[:]
	if batchTo != "" {
		ah.h[wire.HeaderAnswerBatch] = ah.batch[:]
	}
	err := b.send(subject, "", packet, ah.h)
	clear(ah.h) // and a traceparent send added
	ah.stream[0], ah.reply[0], ah.batch[0] = "", "", ""
	answeredHeaders.Put(ah)
	return err
}

// AnsweredSubmitHeader is the header of a submission published with
// PublishAnsweredSubmit: for a sender that encodes its packets itself.
func AnsweredSubmitHeader(replyTo string) nats.Header {
	return nats.Header{
		jetstream.ExpectedStreamHeader: []string{AnsweredSubmitStream},
		wire.HeaderReplyTo:             []string{replyTo},
	}
}

// submitRetryPacket is the encoded answer to a PublishAnsweredSubmit whose
// handler failed.
var submitRetryPacket = mustMarshalAnswer(&pb.JobAnswer{Retryable: true, Error: SubmitRetryError})

func mustMarshalAnswer(a *pb.JobAnswer) []byte {
	data, err := proto.Marshal(&pb.BusPacket{Payload: &pb.BusPacket_JobAnswer{JobAnswer: a}})
	if err != nil {
		panic(err)
	}
	return data
}

// The answers to a result published with PublishAnswered. On the bus each
// is a BusPacket carrying a JobAnswer (answerPackets): ok for AnswerDone,
// retryable for AnswerRetry, neither for AnswerNotStored. SubscribeAnswers
// hands its handler these names.
const (
	// AnswerDone: handled (the job recorded, or the result refused for
	// good, as a stale or malformed one is): nothing more to do.
	AnswerDone = "done"
	// AnswerRetry: not handled (the store failed): publish it for the
	// stream.
	AnswerRetry = "retry"
	// AnswerNotStored: handled by a scheduler whose intake is core NATS
	// (the memory store): there is nothing durable to wait for, so the
	// sender may as well publish its results plainly.
	AnswerNotStored = "not-stored"
)

// PublishAnswered publishes packet, a result, on subject (sys.job.result
// or below) for a scheduler to answer on replyTo (AnswerDone, AnswerRetry
// or AnswerNotStored), instead of having the result stream store it
// (see AnsweredStream). The sender keeps the result until answered, and
// publishes it with Publish when no answer comes: with no scheduler
// running, a scheduler of an earlier version, or a lost connection.
//
// batchTo, when not empty, is a subject the sender also reads answers on
// (wire.HeaderAnswerBatch): a scheduler may answer AnswerDone there, within
// milliseconds and together with the sender's other results, in one
// answer that lists the number ending replyTo (which must then end in
// one: <prefix>.<n>). SubscribeAnswers hands such an answer over with
// that list.
func (b *NatsBus) PublishAnswered(subject string, packet *pb.BusPacket, replyTo, batchTo string) error {
	if err := b.checkSubjectLength(subject, len(replyTo)+len(batchTo)); err != nil {
		return err
	}
	return b.publishAnswered(subject, packet, AnsweredStream, replyTo, batchTo)
}

// SubscribeAnswers delivers the answers to PublishAnswered that arrive on
// subject (a wildcard over the reply subjects given), with the subject
// each came on. Of an answer only ok and retryable are read, and the
// packet's wire format checked: a job record in it (the answer to a
// PublishAnsweredSubmit) is skipped, not decoded. A batched answer (on the
// batch subject PublishAnswered was given) comes with batch, the numbers
// of the results it answers; batch is nil for an answer to one result.
func (b *NatsBus) SubscribeAnswers(subject string, handler func(subject, answer string, batch []uint64)) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) {
		// Only the verdict is read: the job record an answered
		// submission's answer carries is not decoded (answerVerdict).
		answer, batched, notAnswer, err := answerVerdict(m.Data, b.cfg.MaxPacketBytes)
		if err != nil {
			_ = b.rejected(m.Subject, m.Data, err) // counted and logged; unanswered, the packet is published again
			return
		}
		if notAnswer {
			b.log.Warn("answer to a result is not a job answer: ignored", "subject", m.Subject)
			return
		}
		if !batched {
			handler(m.Subject, answer, nil)
			return
		}
		p, err := decodePacket(m.Data, b.cfg.MaxPacketBytes, false)
		if err != nil {
			_ = b.rejected(m.Subject, m.Data, err)
			return
		}
		if list := p.GetJobAnswer().GetAnswered(); len(list) > 0 {
			handler(m.Subject, answer, list)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	return func() error { return b.drain(sub) }, nil
}

// AnswerPacket is the encoded BusPacket of an answer to PublishAnswered
// (AnswerDone, AnswerRetry or AnswerNotStored), nil for another name.
func AnswerPacket(answer string) []byte { return answerPackets[answer] }

// answerPackets are the encoded answers to PublishAnswered, by name.
var answerPackets = func() map[string][]byte {
	m := make(map[string][]byte, 3)
	for name, a := range map[string]*pb.JobAnswer{
		AnswerDone:      {Ok: true},
		AnswerRetry:     {Retryable: true, Error: "the job store write failed: publish the result for the stream"},
		AnswerNotStored: {Error: "this scheduler's intake is core NATS: publish results plainly"},
	} {
		m[name] = mustMarshalAnswer(a)
	}
	return m
}()

// handleAnswered handles a result published with PublishAnswered, then
// answers its sender: AnswerDone once the handler has returned nil (or the
// packet is garbage, which is never handled), in a batch if the sender
// asked for one (wire.HeaderAnswerBatch), AnswerRetry otherwise, at once;
// nothing when the handler says the reply subject is not the sender's
// (wire.ErrNotAnswered). The handler is given the reply subject.
func (b *NatsBus) handleAnswered(m *nats.Msg, handler func(subject string, p *pb.BusPacket, replyTo string) error, batcher *answerBatcher) {
	replyTo := m.Header.Get(wire.HeaderReplyTo)
	packet, pooled, err := b.decodeIntake(m.Subject, m.Data)
	if err != nil {
		b.answerResult(replyTo, AnswerDone) // garbage stays garbage: never again
		return
	}
	defer releaseIntakePacket(pooled)
	var herr error
	b.noteIncoming(m.Header, packet)
	b.call(m.Subject, packet, func(p *pb.BusPacket) { herr = handler(m.Subject, p, replyTo) })
	switch {
	case errors.Is(herr, wire.ErrNotAnswered):
		return // handled; the reply subject is not the sender's to read
	case herr != nil:
		b.log.Warn("handler failed; the sender publishes it for the stream", "subject", m.Subject, "err", herr)
		b.answerResult(replyTo, AnswerRetry)
		return
	}
	if batchTo := m.Header.Get(wire.HeaderAnswerBatch); batchTo != "" {
		batcher.done(replyTo, batchTo)
		return
	}
	b.answerResult(replyTo, AnswerDone)
}

// handleAnsweredSubmit handles a submission published with
// PublishAnsweredSubmit. The handler answers it (admission answers every
// submission it decides on); the bus answers only what the handler could
// not decide: retryable (SubmitRetryError) when it failed, and a refusal
// naming the error when the packet is garbage (counted and logged by
// decodeIntake), which published again would stay garbage.
func (b *NatsBus) handleAnsweredSubmit(m *nats.Msg, handler func(subject string, p *pb.BusPacket, replyTo string) error) {
	replyTo := m.Header.Get(wire.HeaderReplyTo)
	packet, pooled, err := b.decodeIntake(m.Subject, m.Data)
	if err != nil {
		b.answerInbox(replyTo, mustMarshalAnswer(&pb.JobAnswer{Error: "the submission is not a valid packet: " + err.Error()}))
		return
	}
	defer releaseIntakePacket(pooled)
	var herr error
	b.noteIncoming(m.Header, packet)
	b.call(m.Subject, packet, func(p *pb.BusPacket) { herr = handler(m.Subject, p, replyTo) })
	if herr != nil && !errors.Is(herr, wire.ErrNotAnswered) {
		b.log.Warn("handler failed; the sender publishes it for the stream", "subject", m.Subject, "err", herr)
		b.answerInbox(replyTo, submitRetryPacket)
	}
}

// answerResult sends an answer to a PublishAnswered (answerInbox).
func (b *NatsBus) answerResult(replyTo, answer string) {
	b.answerInbox(replyTo, answerPackets[answer])
}

// answerInbox sends an encoded answer to a PublishAnswered or a
// PublishAnsweredSubmit. Answers go only to an inbox (_INBOX.…): a reply
// subject that is not one (empty, a system or job subject, a wildcard, too
// long) gets none, so a packet cannot make the scheduler publish anywhere
// else; its sender then publishes it plainly.
func (b *NatsBus) answerInbox(replyTo string, data []byte) {
	if !wire.IsInbox(replyTo) || b.checkSubjectLength(replyTo, 0) != nil {
		b.log.Debug("answer not sent: the reply subject is not an inbox", "reply", truncate(replyTo, 128))
		return
	}
	_ = b.nc.Publish(replyTo, data)
}
