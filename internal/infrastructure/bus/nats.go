// Package bus carries cortex.v1 BusPackets over NATS. Everything on the wire is
// Protobuf: a message that does not decode, is too large, or carries no known
// payload is logged, counted and dropped; it never reaches a handler and never
// stops a subscription.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// DefaultMaxPacketBytes is the largest packet accepted, matching the NATS
// server's default max_payload. Larger inputs and outputs belong behind
// context_ptr / result_ptr.
const DefaultMaxPacketBytes = 1 << 20

// DefaultMaxControlLine is nats-server's default max_control_line: the
// longest protocol line (PUB <subject> <reply> <size>) the server takes. On a
// longer one the server closes the connection, and nats.go does not
// reconnect: one long subject would take the process off the bus for good.
const DefaultMaxControlLine = 4096

// controlLineOverhead is the room a protocol line needs besides its
// subjects: the verb, the spaces, the header and payload sizes, CRLF.
const controlLineOverhead = 64

// requestInboxAllowance is the room Request leaves for the reply inbox
// nats.go picks (_INBOX.<prefix>.<nuid>.<token>).
const requestInboxAllowance = 128

// Errors returned by the bus. Decode failures wrap ErrMalformed, oversize
// packets ErrTooLarge, packets with no known payload ErrUnknownPayload.
var (
	ErrMalformed      = errors.New("bus: malformed packet")
	ErrTooLarge       = errors.New("bus: packet too large")
	ErrUnknownPayload = errors.New("bus: packet has no known payload")
	ErrNilPacket      = errors.New("bus: nil packet")
	// ErrSubjectTooLong: a publish whose subject and reply subject do not
	// fit in the server's protocol line. It also wraps wire.ErrUnpublishable.
	ErrSubjectTooLong = errors.New("bus: subject too long")
	// ErrClosedByServer: the connection was closed, for good, by something
	// else than Close (the server refused a protocol line or the
	// credentials). See NatsBus.Closed.
	ErrClosedByServer = errors.New("bus: connection closed by the server")
)

// Config configures a NatsBus. The zero value of every field but URL is
// replaced by its default in Connect.
type Config struct {
	// URL of the NATS server(s), comma separated. Default nats.DefaultURL.
	URL string
	// Name identifies the connection in the server's monitoring.
	Name string
	// Logger receives connection events and rejected packets. Default slog.Default().
	Logger *slog.Logger
	// MaxPacketBytes caps a packet before it is decoded. Default DefaultMaxPacketBytes.
	MaxPacketBytes int
	// DrainTimeout bounds Close. Default 10s.
	DrainTimeout time.Duration
	// MaxControlLine is the server's max_control_line. A publish whose
	// subject and reply subject would not fit in it is refused before it is
	// sent (ErrSubjectTooLong) instead of making the server close the
	// connection. Default DefaultMaxControlLine, the server's default.
	MaxControlLine int
	// Options are extra nats.go options (credentials, TLS, ...), applied last.
	Options []nats.Option
	// Replicas of the intake streams EnsureStream creates or updates. 0: 1.
	Replicas int
}

func (c *Config) setDefaults() {
	if c.URL == "" {
		c.URL = nats.DefaultURL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxPacketBytes <= 0 {
		c.MaxPacketBytes = DefaultMaxPacketBytes
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.MaxControlLine <= controlLineOverhead {
		c.MaxControlLine = DefaultMaxControlLine
	}
}

// Stats counts what the bus did. All fields are cumulative.
type Stats struct {
	Published      uint64
	Delivered      uint64 // packets handed to a handler
	Malformed      uint64 // bytes that did not decode
	TooLarge       uint64 // packets over MaxPacketBytes, in or out
	UnknownPayload uint64 // decoded, but no payload this version knows
	HandlerPanics  uint64
	AsyncErrors    uint64 // slow consumer and other asynchronous errors
	Reconnects     uint64
	// RepliesRefused counts requests to Serve whose reply subject is not an
	// inbox: not answered.
	RepliesRefused uint64
}

// NatsBus publishes and subscribes BusPackets on one NATS connection.
type NatsBus struct {
	nc     *nats.Conn
	cfg    Config
	log    *slog.Logger
	closed chan struct{}
	once   sync.Once

	durable  atomic.Bool
	closing  atomic.Bool  // Close was called: a close is not the server's doing
	intake   backlog      // Consume's consumers, for Backlog
	borrowed bool         // made by FromConn: the connection is the caller's
	trace    traceHeaders // trace.go

	published, delivered, malformed, tooLarge, unknown, panics, asyncErrs, reconnects, repliesRefused atomic.Uint64
}

// NewNatsBus connects to url with default settings, as the design document's
// constructor did.
func NewNatsBus(url string) (*NatsBus, error) {
	return Connect(Config{URL: url})
}

// Connect opens a connection that reconnects forever and logs every
// disconnect, reconnect and asynchronous error. The server can still close
// it for good (a protocol error, credentials it no longer accepts): then
// Closed is closed and CloseError says why, and the process should exit or
// connect again rather than go on deaf.
func Connect(cfg Config) (*NatsBus, error) {
	cfg.setDefaults()
	b := &NatsBus{cfg: cfg, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentBus), closed: make(chan struct{})}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("bus disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.reconnects.Add(1)
			b.log.Info("bus reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			b.asyncErrs.Add(1)
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			b.log.Error("bus asynchronous error", "subject", subject, "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if !b.closing.Load() {
				b.log.Error("bus connection closed by the server; it will not reconnect", "err", nc.LastError())
			}
			b.once.Do(func() { close(b.closed) })
		}),
	}
	opts = append(opts, cfg.Options...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect %s: %w", cfg.URL, err)
	}
	b.nc = nc
	return b, nil
}

// SetDurable makes Consume read from JetStream streams (true; EnsureStream) or
// core queue subscriptions (false, the default). Set it before Consume.
func (b *NatsBus) SetDurable(on bool) { b.durable.Store(on) }

// Conn exposes the underlying connection for request-reply and JetStream.
func (b *NatsBus) Conn() *nats.Conn { return b.nc }

// Closed is closed once the connection is closed for good: by Close, or by
// the server (see CloseError).
func (b *NatsBus) Closed() <-chan struct{} { return b.closed }

// CloseError is nil while the connection is open or when Close closed it;
// once something else closed it for good (the server: a protocol line it
// refused, credentials it no longer accepts), it wraps ErrClosedByServer and
// says why.
func (b *NatsBus) CloseError() error {
	select {
	case <-b.closed:
	default:
		return nil
	}
	if b.closing.Load() {
		return nil
	}
	if err := b.nc.LastError(); err != nil {
		return fmt.Errorf("%w: %w", ErrClosedByServer, err)
	}
	return ErrClosedByServer
}

// Close drains the connection: subscriptions stop taking messages, handlers
// finish what they hold and pending publishes are flushed. It waits at most
// Config.DrainTimeout. A bus made by FromConn leaves its connection alone.
func (b *NatsBus) Close() {
	b.closing.Store(true)
	if b.borrowed || b.nc.IsClosed() {
		return
	}
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
		return
	}
	select {
	case <-b.closed:
	case <-time.After(b.cfg.DrainTimeout + time.Second):
		b.nc.Close()
	}
}

// Publish encodes packet and publishes it on subject.
func (b *NatsBus) Publish(subject string, packet *pb.BusPacket) error {
	return b.publish(subject, "", packet)
}

// publish publishes packet on subject with reply as its reply subject
// ("": none).
func (b *NatsBus) publish(subject, reply string, packet *pb.BusPacket) error {
	if err := b.checkSubjects(subject, reply); err != nil {
		return err
	}
	return b.send(subject, reply, packet, nil)
}

// publishWithHeader publishes packet on subject with header h (the
// caller's to give away).
func (b *NatsBus) publishWithHeader(subject string, packet *pb.BusPacket, h nats.Header) error {
	return b.send(subject, "", packet, h)
}

// send publishes packet on subject, with reply ("": none) and header h
// (nil: none), to which it adds the packet's traceparent when traced. The
// packet is marshalled into a pooled buffer: the NATS client copies the
// bytes into its own before it returns.
func (b *NatsBus) send(subject, reply string, packet *pb.BusPacket, h nats.Header) error {
	buf := encodeBuffers.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledBuffer {
			encodeBuffers.Put(buf)
		}
	}()
	data, err := b.encodeAppend((*buf)[:0], packet)
	if err != nil {
		return publishError(subject, err)
	}
	*buf = data
	if tp := b.outgoingHeader(packet); tp != "" {
		if h == nil {
			h = nats.Header{}
		}
		h[HeaderTraceparent] = []string{tp}
	}
	switch {
	case h != nil:
		err = b.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: data, Header: h})
	case reply == "":
		err = b.nc.Publish(subject, data)
	default:
		err = b.nc.PublishRequest(subject, reply, data)
	}
	if err != nil {
		return publishError(subject, err)
	}
	b.published.Add(1)
	return nil
}

// checkSubjects refuses a publish whose subject and reply subject would not
// fit in the server's protocol line: sent, it would make the server close
// the connection for good.
func (b *NatsBus) checkSubjects(subject, reply string) error {
	return b.checkSubjectLength(subject, len(reply))
}

// checkSubjectLength is checkSubjects with a reply subject of replyLen bytes.
func (b *NatsBus) checkSubjectLength(subject string, replyLen int) error {
	limit := b.cfg.MaxControlLine - controlLineOverhead
	if n := len(subject) + replyLen; n > limit {
		return fmt.Errorf("bus: publish %s: %w: %w: subject and reply subject of %d bytes, at most %d",
			shorten(subject), wire.ErrUnpublishable, ErrSubjectTooLong, n, limit)
	}
	return nil
}

// publishError is the error of a failed publish on subject; one that can
// never succeed as asked wraps wire.ErrUnpublishable.
func publishError(subject string, err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("bus: publish %s: %w: %w", shorten(subject), wire.ErrUnpublishable, err)
	}
	return fmt.Errorf("bus: publish %s: %w", shorten(subject), err)
}

// shorten keeps an error about a long subject short.
func shorten(subject string) string {
	const keep = 64
	if len(subject) <= keep {
		return subject
	}
	return fmt.Sprintf("%s…(%d bytes)", subject[:keep], len(subject))
}

// encodeBuffers are Publish's marshal buffers; buffers grown past
// maxPooledBuffer by a large packet are not kept.
var encodeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledBuffer = 64 << 10

// Encode marshals packet, refusing packets larger than MaxPacketBytes.
func (b *NatsBus) Encode(packet *pb.BusPacket) ([]byte, error) {
	return b.encodeAppend(nil, packet)
}

// encodeAppend marshals packet onto buf, refusing packets larger than
// MaxPacketBytes.
func (b *NatsBus) encodeAppend(buf []byte, packet *pb.BusPacket) ([]byte, error) {
	data, err := AppendPacket(buf, packet, b.cfg.MaxPacketBytes)
	if errors.Is(err, ErrTooLarge) {
		b.tooLarge.Add(1)
	}
	return data, err
}

// AppendPacket marshals packet onto buf, refusing a packet larger than
// maxBytes (0: no limit) before building it. It writes the bytes
// proto.Marshal writes, with the generated MarshalVT code (vtprotobuf)
// instead of reflection.
func AppendPacket(buf []byte, packet *pb.BusPacket, maxBytes int) ([]byte, error) {
	if packet == nil {
		return nil, ErrNilPacket
	}
	size := packet.SizeVT()
	if maxBytes > 0 && size > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, maxBytes)
	}
	n := len(buf)
	data := slices.Grow(buf, size)[:n+size]
	if _, err := packet.MarshalToSizedBufferVT(data[n:]); err != nil {
		return nil, fmt.Errorf("bus: encode: %w", err)
	}
	return data, nil
}

// Subscribe delivers every decodable packet on subject to handler. With an
// empty queue each subscriber gets every message; with a queue group each
// message goes to one member. Handlers run one at a time per subscription;
// a handler that panics is logged and counted, and delivery goes on.
//
// The returned drain function stops delivery, lets the handler finish the
// packets already received, and returns when it has (or after DrainTimeout).
func (b *NatsBus) Subscribe(subject, queue string, handler func(*pb.BusPacket)) (drain func() error, err error) {
	if handler == nil {
		return nil, errors.New("bus: nil handler")
	}
	cb := func(m *nats.Msg) { b.deliver(m, handler) }
	// The client's default pending limits (512k messages / 64 MiB) are kept;
	// overflow is reported through the error handler as a slow consumer.
	return b.subscribe(subject, queue, cb)
}

// drain drains sub and waits until its handler has finished.
func (b *NatsBus) drain(sub *nats.Subscription) error {
	if !sub.IsValid() {
		return nil
	}
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			return nil
		}
		return fmt.Errorf("bus: drain %s: %w", sub.Subject, err)
	}
	timer := time.NewTimer(b.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-closed:
	case <-b.closed:
	case <-timer.C:
		_ = sub.Unsubscribe()
		return fmt.Errorf("bus: drain %s: timed out after %s", sub.Subject, b.cfg.DrainTimeout)
	}
	return nil
}

func (b *NatsBus) deliver(m *nats.Msg, handler func(*pb.BusPacket)) {
	packet, err := b.decode(m.Subject, m.Data)
	if err != nil {
		return
	}
	b.noteIncoming(m.Header, packet)
	b.call(m.Subject, packet, handler)
}

// decode decodes data received on subject, counting and logging a rejection.
func (b *NatsBus) decode(subject string, data []byte) (*pb.BusPacket, error) {
	packet, err := decodePacket(data, b.cfg.MaxPacketBytes, true)
	return packet, b.rejected(subject, data, err)
}

// decodeIntake is decode for Consume and ConsumeTree (decodeTransient):
// pooled, if not nil, goes back with releaseIntakePacket once the handler
// is done.
func (b *NatsBus) decodeIntake(subject string, data []byte) (_ *pb.BusPacket, pooled *intakePacket, _ error) {
	p, pooled, err := decodeTransient(data, b.cfg.MaxPacketBytes, expectedPayload(subject))
	return p, pooled, b.rejected(subject, data, err)
}

// rejected counts and logs a decode error of data received on subject, and
// returns it.
func (b *NatsBus) rejected(subject string, data []byte, err error) error {
	if err != nil {
		switch {
		case errors.Is(err, ErrTooLarge):
			b.tooLarge.Add(1)
		case errors.Is(err, ErrUnknownPayload):
			b.unknown.Add(1)
		default:
			b.malformed.Add(1)
		}
		b.log.Warn("bus dropped packet", "subject", subject, "bytes", len(data), "err", err)
	}
	return err
}

// call runs handler, containing a panic.
func (b *NatsBus) call(subject string, packet *pb.BusPacket, handler func(*pb.BusPacket)) {
	defer func() {
		if r := recover(); r != nil {
			b.panics.Add(1)
			b.log.Error("bus handler panicked", "subject", subject, "panic", r)
		}
	}()
	b.delivered.Add(1)
	handler(packet)
}

// Decode checks the size of data, then unmarshals it. A packet without a
// payload this version knows (an empty packet, or a oneof member added by a
// newer protocol) is ErrUnknownPayload. Strings not valid UTF-8 and malformed
// unknown fields are ErrMalformed, naming the field.
func Decode(data []byte, maxBytes int) (*pb.BusPacket, error) {
	return decodePacket(data, maxBytes, false)
}

// decodePacket is Decode. With owned, the packet's strings and bytes share
// data instead of copying it: only for a buffer nothing else holds or
// changes, such as a received message's (nats.go copies each message's
// payload into a buffer of its own).
func decodePacket(data []byte, maxBytes int, owned bool) (*pb.BusPacket, error) {
	if maxBytes > 0 && len(data) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), maxBytes)
	}
	p := new(pb.BusPacket)
	var err error
	if owned {
		err = p.UnmarshalVTUnsafe(data)
	} else {
		err = p.UnmarshalVT(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := p.CheckDecoded(); err != nil { // what UnmarshalVT does not check
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if p.Payload == nil {
		return nil, ErrUnknownPayload
	}
	return p, nil
}

// Stats returns the bus counters.
func (b *NatsBus) Stats() Stats {
	return Stats{
		Published:      b.published.Load(),
		Delivered:      b.delivered.Load(),
		Malformed:      b.malformed.Load(),
		TooLarge:       b.tooLarge.Load(),
		UnknownPayload: b.unknown.Load(),
		HandlerPanics:  b.panics.Load(),
		AsyncErrors:    b.asyncErrs.Load(),
		Reconnects:     b.reconnects.Load(),
		RepliesRefused: b.repliesRefused.Load(),
	}
}

// Flush waits until the server has processed everything published so far.
func (b *NatsBus) Flush(ctx context.Context) error {
	return b.nc.FlushWithContext(ctx)
}
