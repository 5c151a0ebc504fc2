package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Request publishes packet on subject and waits for one answer until ctx
// ends. A subject nobody listens on fails at once with an error wrapping
// wire.ErrNoResponders.
func (b *NatsBus) Request(ctx context.Context, subject string, packet *pb.BusPacket) (*pb.BusPacket, error) {
	if err := b.checkSubjectLength(subject, requestInboxAllowance); err != nil {
		return nil, err
	}
	data, err := b.Encode(packet)
	if err != nil {
		return nil, publishError(subject, err)
	}
	msg, err := b.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("bus: request %s: %w", subject, wire.ErrNoResponders)
		}
		if errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrMaxPayload) {
			return nil, publishError(subject, err)
		}
		return nil, fmt.Errorf("bus: request %s: %w", subject, err)
	}
	b.published.Add(1)
	reply, err := decodePacket(msg.Data, b.cfg.MaxPacketBytes, true)
	if err != nil {
		return nil, fmt.Errorf("bus: reply on %s: %w", subject, err)
	}
	return reply, nil
}

// PublishReplyTo publishes packet on subject with the wire.HeaderReplyTo
// header, which asks the scheduler to answer a submission on replyTo.
func (b *NatsBus) PublishReplyTo(subject string, packet *pb.BusPacket, replyTo string) error {
	if err := b.checkSubjects(subject, ""); err != nil {
		return err
	}
	return b.publishWithHeader(subject, packet, nats.Header{wire.HeaderReplyTo: []string{replyTo}})
}

// NewInbox returns a unique subject to receive answers on.
func (b *NatsBus) NewInbox() string { return b.nc.NewInbox() }

// Serve answers requests on subject: handler's non-nil return is sent to the
// requester. Messages published without a reply subject are handled and the
// answer dropped. Like Subscribe, it returns a drain function.
//
// The reply subject is the requester's to choose, and the answer goes out
// with this connection's permissions: Serve answers only on an inbox
// (wire.IsInbox: _INBOX.<...>, no wildcards). Any other reply subject is counted
// (Stats.RepliesRefused), logged, and not answered.
func (b *NatsBus) Serve(subject, queue string, handler func(*pb.BusPacket) *pb.BusPacket) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	cb := func(m *nats.Msg) {
		if m.Reply != "" && !wire.IsInbox(m.Reply) {
			b.refuseReply(m.Subject, m.Reply)
			return
		}
		packet, err := b.decode(m.Subject, m.Data)
		if err != nil {
			// The sender is waiting: tell it what was wrong.
			b.answer(m, &pb.BusPacket{Payload: &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Error: err.Error()}}})
			return
		}
		b.call(m.Subject, packet, func(p *pb.BusPacket) { b.answer(m, handler(p)) })
	}
	sub, err := b.queueSubscribe(subject, queue, cb)
	if err != nil {
		return nil, err
	}
	return func() error { return b.drain(sub) }, nil
}

// ServeTree is Serve of subject and of the subjects below it (subject.>)
// for a handler that decides itself whom it answers: it gets the subject
// each request came on (which may name the requester), the request's reply
// subject, and the packet, or, for bytes that did not decode, a nil packet
// and the decode error (counted and logged already). Its non-nil return is
// published on reply, unchecked: the handler has checked reply.
func (b *NatsBus) ServeTree(subject, queue string, handler func(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	cb := func(m *nats.Msg) {
		packet, err := b.decode(m.Subject, m.Data)
		if err != nil {
			b.call(m.Subject, nil, func(*pb.BusPacket) { b.answer(m, handler(m.Subject, m.Reply, nil, err)) })
			return
		}
		b.call(m.Subject, packet, func(p *pb.BusPacket) { b.answer(m, handler(m.Subject, m.Reply, p, nil)) })
	}
	var subs []*nats.Subscription
	for _, s := range []string{subject, subject + ".>"} {
		sub, err := b.queueSubscribe(s, queue, cb)
		if err != nil {
			for _, done := range subs {
				_ = done.Unsubscribe()
			}
			return nil, err
		}
		subs = append(subs, sub)
	}
	return func() error {
		var errs []error
		for _, sub := range subs {
			errs = append(errs, b.drain(sub))
		}
		return errors.Join(errs...)
	}, nil
}

func (b *NatsBus) queueSubscribe(subject, queue string, cb nats.MsgHandler) (*nats.Subscription, error) {
	var (
		sub *nats.Subscription
		err error
	)
	if queue == "" {
		sub, err = b.nc.Subscribe(subject, cb)
	} else {
		sub, err = b.nc.QueueSubscribe(subject, queue, cb)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	return sub, nil
}

// subscribe is queueSubscribe returning what a Subscribe* method returns:
// the subscription's drain.
func (b *NatsBus) subscribe(subject, queue string, cb nats.MsgHandler) (drain func() error, err error) {
	sub, err := b.queueSubscribe(subject, queue, cb)
	if err != nil {
		return nil, err
	}
	return func() error { return b.drain(sub) }, nil
}

// answer sends answer to m's reply subject, if both exist.
func (b *NatsBus) answer(m *nats.Msg, answer *pb.BusPacket) {
	if answer == nil || m.Reply == "" {
		return
	}
	if err := b.Publish(m.Reply, answer); err != nil {
		b.log.Warn("answering a request failed", "subject", m.Subject, "err", err)
	}
}

// refuseReply counts and logs a request whose reply subject is not an inbox.
func (b *NatsBus) refuseReply(subject, reply string) {
	b.repliesRefused.Add(1)
	b.log.Warn("refused to answer on a subject that is not an inbox", "subject", subject, "reply", truncate(reply, 128))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// InboxPrefix is the prefix of this connection's inboxes (NewInbox without
// its last token): _INBOX.<user> with a user's credentials.
func (b *NatsBus) InboxPrefix() string {
	in := b.nc.NewInbox()
	return in[:strings.LastIndexByte(in, '.')]
}

// PublishRequest publishes packet on subject with reply as its NATS reply
// subject. If nobody is subscribed to subject, the server answers on reply
// at once with a "no responders" status, which SubscribeReplies reports.
func (b *NatsBus) PublishRequest(subject, reply string, packet *pb.BusPacket) error {
	return b.publish(subject, reply, packet)
}

// SubscribeReplies delivers what arrives on subject (a wildcard over reply
// subjects, usually): each answer with the subject it came on, or, for a
// request that reached no subscriber, noResponders and a nil packet.
func (b *NatsBus) SubscribeReplies(subject string, handler func(subject string, p *pb.BusPacket, noResponders bool)) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) {
		if len(m.Data) == 0 && m.Header.Get(statusHeader) == statusNoResponders {
			b.call(m.Subject, nil, func(*pb.BusPacket) { handler(m.Subject, nil, true) })
			return
		}
		packet, err := b.decode(m.Subject, m.Data)
		if err != nil {
			return
		}
		b.call(m.Subject, packet, func(p *pb.BusPacket) { handler(m.Subject, p, false) })
	})
	if err != nil {
		return nil, fmt.Errorf("bus: subscribe %s: %w", subject, err)
	}
	return func() error { return b.drain(sub) }, nil
}

// SubscribeWithReply is Subscribe for handlers that answer later: each
// packet comes with its NATS reply subject ("" when the sender wants none).
func (b *NatsBus) SubscribeWithReply(subject, queue string, handler func(p *pb.BusPacket, reply string)) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	cb := func(m *nats.Msg) {
		packet, err := b.decode(m.Subject, m.Data)
		if err != nil {
			return
		}
		b.noteIncoming(m.Header, packet)
		b.call(m.Subject, packet, func(p *pb.BusPacket) { handler(p, m.Reply) })
	}
	return b.subscribe(subject, queue, cb)
}

// SubscribeRequests is SubscribeWithReply for a handler that keeps nothing
// of a packet past its return but the packet's JobRequest and strings (a
// worker taking dispatches): a packet carrying a job_request is decoded into
// a pooled value (decodeTransient), which goes back to the pool once the
// handler returns. Other packets are decoded, and refused, as
// SubscribeWithReply's are. Three allocations per dispatch fewer.
func (b *NatsBus) SubscribeRequests(subject, queue string, handler func(p *pb.BusPacket, reply string)) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	cb := func(m *nats.Msg) {
		packet, pooled, err := decodeTransient(m.Data, b.cfg.MaxPacketBytes, fieldJobRequest)
		if b.rejected(m.Subject, m.Data, err) != nil {
			return
		}
		defer releaseIntakePacket(pooled)
		b.noteIncoming(m.Header, packet)
		b.call(m.Subject, packet, func(p *pb.BusPacket) { handler(p, m.Reply) })
	}
	return b.subscribe(subject, queue, cb)
}

// The status header nats-server sets on its "no responders" answer.
const (
	statusHeader       = "Status"
	statusNoResponders = "503"
)

// SubscribeWithSubject is Subscribe for handlers that need the subject each
// packet came on (a wildcard subscription whose subjects carry an identity,
// say).
func (b *NatsBus) SubscribeWithSubject(subject, queue string, handler func(subject string, p *pb.BusPacket)) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	cb := func(m *nats.Msg) {
		packet, err := b.decode(m.Subject, m.Data)
		if err != nil {
			return
		}
		b.noteIncoming(m.Header, packet)
		b.call(m.Subject, packet, func(p *pb.BusPacket) { handler(m.Subject, p) })
	}
	return b.subscribe(subject, queue, cb)
}
