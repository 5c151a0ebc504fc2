package bus

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// HeaderTraceparent is the W3C Trace Context header, carried in NATS
// message headers next to a packet (docs/observability.md).
const HeaderTraceparent = "traceparent"

// maxIncomingTraces bounds the incoming trace contexts a bus keeps for its
// handlers: past it, the oldest generation is dropped (a context nobody
// took is one no span asked for).
const maxIncomingTraces = 1 << 15

// traceHeaders carries trace context beside packets, keyed by the
// packet's trace_id, without changing the Bus interfaces: a sender sets
// the traceparent of a trace id before it publishes (SetTraceparent), and
// a handler takes the one its packet came with (TakeTraceparent). Off (the
// default) it costs one atomic load per packet.
type traceHeaders struct {
	on       atomic.Bool
	out      sync.Map // trace_id -> traceparent to send
	mu       sync.Mutex
	in, prev map[string]string // trace_id -> traceparent received: two generations
}

// EnableTraceHeaders turns trace headers on for this connection: sent for
// the trace ids given to SetTraceparent, kept when received for
// TakeTraceparent.
func (b *NatsBus) EnableTraceHeaders() { b.trace.on.Store(true) }

// TraceHeaders reports whether EnableTraceHeaders was called.
func (b *NatsBus) TraceHeaders() bool { return b.trace.on.Load() }

// SetTraceparent makes every packet published with trace id traceID carry
// the header traceparent: tp; an empty tp stops it.
func (b *NatsBus) SetTraceparent(traceID, tp string) {
	if !b.trace.on.Load() || traceID == "" {
		return
	}
	if tp == "" {
		b.trace.out.Delete(traceID)
		return
	}
	b.trace.out.Store(strings.Clone(traceID), tp)
}

// TakeTraceparent returns (and forgets) the traceparent header the last
// packet received with trace id traceID came with; "" if none.
func (b *NatsBus) TakeTraceparent(traceID string) string {
	if !b.trace.on.Load() || traceID == "" {
		return ""
	}
	t := &b.trace
	t.mu.Lock()
	defer t.mu.Unlock()
	tp, ok := t.in[traceID]
	if ok {
		delete(t.in, traceID)
		return tp
	}
	if tp, ok = t.prev[traceID]; ok {
		delete(t.prev, traceID)
	}
	return tp
}

// outgoingHeader is the traceparent to send with packet, if any.
func (b *NatsBus) outgoingHeader(packet *pb.BusPacket) string {
	if !b.trace.on.Load() || packet.GetTraceId() == "" {
		return ""
	}
	if tp, ok := b.trace.out.Load(packet.GetTraceId()); ok {
		return tp.(string)
	}
	return ""
}

// noteIncoming keeps the traceparent a received packet came with.
func (b *NatsBus) noteIncoming(h nats.Header, packet *pb.BusPacket) {
	if !b.trace.on.Load() || h == nil || packet.GetTraceId() == "" {
		return
	}
	tp := h.Get(HeaderTraceparent)
	if tp == "" {
		return
	}
	t := &b.trace
	t.mu.Lock()
	if t.in == nil || len(t.in) >= maxIncomingTraces {
		t.prev, t.in = t.in, make(map[string]string)
	}
	t.in[strings.Clone(packet.GetTraceId())] = tp
	t.mu.Unlock()
}
