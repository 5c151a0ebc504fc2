package kvstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// acks receives the acknowledgements of a Store's writes on one
// subscription of its own, <inbox>.<n>, instead of the connection's request
// machinery (nats.Conn.RequestMsg), which makes a channel and a reply
// subject for every request, registers each under the connection's lock (the
// lock every publish takes) and hands the answer over through that map. Here
// a write is a publish whose reply subject carries its number; the
// acknowledgement's callback finds the waiting write by that number and hands
// it the answer through a channel the write keeps (pooled with its timer,
// its subject and header buffers): no allocation of this code's per write,
// and no wait on the connection's lock.
//
// The subscription is made at the first write and lives until Close or the
// connection closes.
type acks struct {
	nc *nats.Conn

	mu      sync.Mutex
	sub     *nats.Subscription
	prefix  string // <inbox>. : a write's reply subject is prefix + its number
	next    uint64
	waiting map[uint64]*pendingWrite
	closed  bool
}

// pendingWrite is one write waiting for its acknowledgement; pooled.
type pendingWrite struct {
	ch    chan ackAnswer // capacity 1: the callback never waits
	timer *time.Timer
	msg   nats.Msg
	hdr   nats.Header // ExpectedLastSubjSeqHeader: one value, set per write
	buf   []byte      // subject, reply subject and header value, as one buffer
}

type ackAnswer struct {
	data         []byte
	noResponders bool
	err          error
}

var pendingWrites = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	w := &pendingWrite{ch: make(chan ackAnswer, 1), timer: t, hdr: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{""}}}
	return w
}}

// errAcksClosed is the error of a write made, or waiting, when Close runs.
var errAcksClosed = errors.New("kvstore: store closed")

// start subscribes, once; the caller holds a.mu.
func (a *acks) start() error {
	if a.closed {
		return errAcksClosed
	}
	if a.sub != nil {
		return nil
	}
	inbox := a.nc.NewInbox()
	sub, err := a.nc.Subscribe(inbox+".*", a.answer)
	if err != nil {
		return err
	}
	a.sub, a.prefix = sub, inbox+"."
	a.waiting = make(map[uint64]*pendingWrite)
	return nil
}

// answer is the subscription's callback: it hands an acknowledgement to
// the write waiting for it. One nobody waits for (the write gave up) is
// dropped.
func (a *acks) answer(m *nats.Msg) {
	a.mu.Lock()
	n, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, a.prefix), 10, 64)
	var w *pendingWrite
	if err == nil {
		w = a.waiting[n]
		delete(a.waiting, n)
	}
	a.mu.Unlock()
	if w == nil {
		return
	}
	w.ch <- ackAnswer{data: m.Data, noResponders: len(m.Data) == 0 && m.Header.Get("Status") == "503"}
}

// request publishes data on prefix+key with the expected-last-subject-
// sequence header rev and waits for the acknowledgement, until ctx ends or,
// when ctx has no deadline, writeTimeout (nats.ErrTimeout).
func (a *acks) request(ctx context.Context, prefix, key string, data []byte, rev uint64) (ackAnswer, error) {
	w := pendingWrites.Get().(*pendingWrite)
	a.mu.Lock()
	if err := a.start(); err != nil {
		a.mu.Unlock()
		pendingWrites.Put(w)
		return ackAnswer{}, err
	}
	a.next++
	n := a.next
	a.waiting[n] = w
	inbox := a.prefix
	a.mu.Unlock()

	// One buffer holds the subject, the reply subject and the header
	// value: the publish copies them out before it returns.
	b := append(w.buf[:0], prefix...)
	b = append(b, key...)
	ns := len(b)
	b = append(b, inbox...)
	b = strconv.AppendUint(b, n, 10)
	nr := len(b)
	b = strconv.AppendUint(b, rev, 10)
	w.buf = b
	w.hdr[jetstream.ExpectedLastSubjSeqHeader][0] = unsafe.String(&b[nr], len(b)-nr)
	w.msg = nats.Msg{
		Subject: unsafe.String(&b[0], ns),
		Reply:   unsafe.String(&b[ns], nr-ns),
		Header:  w.hdr,
		Data:    data,
	}
	if err := a.nc.PublishMsg(&w.msg); err != nil {
		a.forget(n, w)
		return ackAnswer{}, err
	}

	var done <-chan struct{}
	if _, ok := ctx.Deadline(); ok || ctx.Done() != nil {
		done = ctx.Done()
	} else {
		w.timer.Reset(writeTimeout)
	}
	var ans ackAnswer
	select {
	case ans = <-w.ch:
		w.timer.Stop()
		w.release()
		return ans, ans.err
	case <-w.timer.C:
		a.forget(n, w)
		return ackAnswer{}, nats.ErrTimeout
	case <-done:
		w.timer.Stop()
		a.forget(n, w)
		return ackAnswer{}, ctx.Err()
	}
}

// forget gives up waiting for write n. If the callback took it meanwhile,
// its answer is on the way: taken, so that the pooled channel is empty.
func (a *acks) forget(n uint64, w *pendingWrite) {
	a.mu.Lock()
	_, mine := a.waiting[n]
	delete(a.waiting, n)
	a.mu.Unlock()
	if !mine {
		<-w.ch
	}
	w.release()
}

func (w *pendingWrite) release() {
	w.msg = nats.Msg{}
	w.hdr[jetstream.ExpectedLastSubjSeqHeader][0] = ""
	if cap(w.buf) > 4096 {
		w.buf = nil
	}
	pendingWrites.Put(w)
}

// close unsubscribes and fails the writes still waiting.
func (a *acks) close() error {
	a.mu.Lock()
	a.closed = true
	sub, waiting := a.sub, a.waiting
	a.sub, a.waiting = nil, nil
	a.mu.Unlock()
	for _, w := range waiting {
		w.ch <- ackAnswer{err: errAcksClosed}
	}
	if sub == nil {
		return nil
	}
	err := sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	return err
}
