package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// errStalled ends a round in which no result arrived for IdleTimeout.
var errStalled = errors.New("stalled")

// tracker correlates results with submissions. Job ids are prefix + index, so
// a result finds its submission in a slice without a map or a lock. Times are
// nanoseconds since start on the monotonic clock; everything runs in one
// process, so the worker's dispatch time is on the same clock. The fields are
// atomics because they are written and read by goroutines that only
// synchronise through NATS, which the race detector cannot see.
type tracker struct {
	prefix     string
	start      time.Time
	sent       []atomic.Int64 // intended send time (rate) or actual send time (window)
	dispatched []atomic.Int64 // when the worker got the job; 0: not seen
	done       []atomic.Bool  // result received
	// resubmitted: published again plainly (answered submissions only)
	resubmitted []atomic.Bool
}

func newTracker(prefix string, n int) *tracker {
	return &tracker{
		prefix:     prefix,
		start:      time.Now(),
		sent:       make([]atomic.Int64, n),
		dispatched: make([]atomic.Int64, n),
		done:       make([]atomic.Bool, n),

		resubmitted: make([]atomic.Bool, n),
	}
}

func (t *tracker) now() int64 { return int64(time.Since(t.start)) }

func (t *tracker) jobID(n int) string { return t.prefix + strconv.Itoa(n) }

// index parses a job id of this tracker; ok is false for any other id.
func (t *tracker) index(jobID string) (n int, ok bool) {
	if len(jobID) <= len(t.prefix) || jobID[:len(t.prefix)] != t.prefix {
		return 0, false
	}
	for i := len(t.prefix); i < len(jobID); i++ {
		c := jobID[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n >= len(t.sent) {
			return 0, false
		}
	}
	return n, true
}

// dispatch records that a worker received jobID (the first time only).
func (t *tracker) dispatch(jobID string) {
	if n, ok := t.index(jobID); ok {
		t.dispatched[n].CompareAndSwap(0, max(1, t.now()))
	}
}

// encoder builds the submission packets: the bytes client.Submit would send
// (a JobRequest in a BusPacket stamped now, trace id = job id), marshalled
// into a reused buffer. The floor and the system send the same bytes.
type encoder struct {
	tr      *tracker
	pkt     *pb.BusPacket
	req     *pb.JobRequest
	ts      *timestamppb.Timestamp
	id, out []byte
}

func newEncoder(tr *tracker, senderID, topic, payload string) *encoder {
	req := &pb.JobRequest{Topic: topic, ContextPtr: payload}
	pkt := wire.JobRequestPacket("", senderID, req)
	return &encoder{tr: tr, pkt: pkt, req: req, ts: pkt.CreatedAt}
}

func (e *encoder) encode(n int) ([]byte, error) {
	e.id = strconv.AppendInt(append(e.id[:0], e.tr.prefix...), int64(n), 10)
	id := string(e.id)
	e.req.JobId, e.pkt.TraceId = id, id
	now := time.Now()
	e.ts.Seconds, e.ts.Nanos = now.Unix(), int32(now.Nanosecond())
	var err error
	e.out, err = bus.AppendPacket(e.out[:0], e.pkt, 0)
	return e.out, err
}

// histogram bounds, in nanoseconds.
const (
	histMin = 1
	histMax = int64(10 * time.Minute)
)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 3) }

// round is one batch of jobs [lo, hi) driven to completion.
type round struct {
	lo, hi int
	record bool
	slots  chan struct{} // window; nil: no cap
	start  int64         // written by the driver before the first send

	completed atomic.Int64
	done      chan struct{}

	// Owned by the result handler until done is closed.
	end                  int64
	failed, undispatched int64
	result, dispatch     *hdrhistogram.Histogram

	// lag is how late the driver sent each job after its due time (rate
	// only); owned by the driver.
	lag *hdrhistogram.Histogram
}

func newRound(lo, hi, window int, record bool) *round {
	r := &round{lo: lo, hi: hi, record: record, done: make(chan struct{})}
	if window > 0 {
		r.slots = make(chan struct{}, window)
	}
	if record {
		r.result, r.dispatch, r.lag = newHistogram(), newHistogram(), newHistogram()
	}
	return r
}

// driver is the load generator: it publishes the jobs of a round on one
// connection, within the window or at the rate, and handles their results,
// which arrive on that connection's subscription (one goroutine).
type driver struct {
	tr      *tracker
	nc      *nats.Conn
	subject string
	enc     *encoder
	window  int
	rate    float64
	idle    time.Duration

	progress io.Writer
	label    string

	// answers, when not "", is the inbox the driver's submissions ask
	// their answers under (answers.<n> for job n), as client.Submit's do:
	// they are published for an answer (bus.PublishAnsweredSubmit), and
	// a job answered retryable is published again plainly by resubmit.
	// "": plain submissions, nobody answers.
	answers  string
	resubMu  sync.Mutex
	resubEnc *encoder // resubmit's own, under resubMu: enc is the driver's

	cur                 atomic.Pointer[round]
	foreign, dups, lost atomic.Uint64
	resubmits, refused  atomic.Uint64
}

// onAnswer is the handler of the answers to the driver's submissions
// (bus.SubscribeAnswers under answers.*). A job accepted needs nothing
// more; one answered retryable (the store failed) is published again
// plainly, once, as client.Submit does; a refusal is counted (its job
// never completes, and the round stalls).
func (d *driver) onAnswer(subject, answer string, _ []uint64) { // a submission's answer is never batched
	n, err := strconv.Atoi(subject[min(len(d.answers)+1, len(subject)):])
	if err != nil || n < 0 || n >= len(d.tr.sent) {
		d.foreign.Add(1)
		return
	}
	switch answer {
	case bus.AnswerRetry:
		if !d.tr.resubmitted[n].Swap(true) {
			d.resubmit(n, subject)
		}
	case bus.AnswerNotStored: // a submission's refusal
		d.refused.Add(1)
	}
}

// resubmit publishes job n plainly, for the intake stream to keep, still
// asking for its answer on reply (client.Submit's PublishReplyTo).
func (d *driver) resubmit(n int, reply string) {
	d.resubMu.Lock()
	defer d.resubMu.Unlock()
	data, err := d.resubEnc.encode(n)
	if err != nil {
		return
	}
	if d.nc.PublishMsg(&nats.Msg{Subject: d.subject, Data: data, Header: nats.Header{wire.HeaderReplyTo: []string{reply}}}) == nil {
		d.resubmits.Add(1)
	}
}

// onResult is the client's handler for result packets.
func (d *driver) onResult(p *pb.BusPacket) {
	res := p.GetJobResult()
	if res == nil {
		return
	}
	n, ok := d.tr.index(res.GetJobId())
	if !ok {
		d.foreign.Add(1) // another client's job on a shared server
		return
	}
	now := d.tr.now()
	if d.tr.done[n].Swap(true) {
		d.dups.Add(1)
		return
	}
	r := d.cur.Load()
	if r == nil || n < r.lo || n >= r.hi {
		d.lost.Add(1) // cannot happen: rounds run one after another
		return
	}
	if r.record {
		sent := d.tr.sent[n].Load()
		_ = r.result.RecordValue(clamp(now - sent))
		if disp := d.tr.dispatched[n].Load(); disp > 0 {
			_ = r.dispatch.RecordValue(clamp(disp - sent))
		} else {
			r.undispatched++
		}
	}
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		r.failed++
	}
	if r.slots != nil {
		<-r.slots
	}
	if int(r.completed.Add(1)) == r.hi-r.lo {
		r.end = now
		close(r.done)
	}
}

func clamp(ns int64) int64 { return min(max(ns, histMin), histMax) }

// drive sends the jobs of r and waits for all their results.
func (d *driver) drive(ctx context.Context, r *round) error {
	if r.hi <= r.lo {
		close(r.done)
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.cur.Store(r)
	stopWatch := d.watch(ctx, cancel, r)
	defer stopWatch()

	var period float64
	if d.rate > 0 {
		period = float64(time.Second) / d.rate
	}
	start := d.tr.now()
	r.start = start
	for n := r.lo; n < r.hi; n++ {
		if r.slots != nil {
			select {
			case r.slots <- struct{}{}:
			default:
				select {
				case r.slots <- struct{}{}:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
		}
		t := d.tr.now()
		if period > 0 {
			// Open loop: job n is due at a fixed time, whatever happened to
			// the others; latency counts from then.
			due := start + int64(float64(n-r.lo)*period)
			if wait := due - t; wait > 0 {
				if err := sleep(ctx, time.Duration(wait)); err != nil {
					return context.Cause(ctx)
				}
			}
			if r.record {
				_ = r.lag.RecordValue(clamp(d.tr.now() - due))
			}
			t = due
		}
		d.tr.sent[n].Store(t)
		data, err := d.enc.encode(n)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		if d.answers != "" {
			err = d.nc.PublishMsg(&nats.Msg{Subject: d.subject, Data: data, Header: bus.AnsweredSubmitHeader(d.answers + "." + strconv.Itoa(n))})
		} else {
			err = d.nc.Publish(d.subject, data)
		}
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watch cancels the round when no result arrived for the idle timeout, and
// draws the progress bar. It returns a function that stops it.
func (d *driver) watch(ctx context.Context, cancel context.CancelCauseFunc, r *round) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		total := int64(r.hi - r.lo)
		last, lastChange := int64(-1), time.Now()
		bar := newProgressBar(d.progress, d.label, total)
		defer bar.finish(func() int64 { return r.completed.Load() })
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				c := r.completed.Load()
				bar.draw(c)
				if c != last {
					last, lastChange = c, now
				} else if now.Sub(lastChange) > d.idle {
					cancel(fmt.Errorf("%w: %d of %d results after no progress for %s (core NATS may have dropped a message; see the bus errors)",
						errStalled, c, total, d.idle))
					return
				}
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
	}
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
