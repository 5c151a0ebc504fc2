package worker

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// answerer is what the answered results need of the bus (bus.NatsBus has
// it; the tests' stand-ins may not, and then every result is published
// plainly).
type answerer interface {
	PublishAnswered(subject string, packet *pb.BusPacket, replyTo, batchTo string) error
	SubscribeAnswers(subject string, handler func(subject, answer string, batch []uint64)) (drain func() error, err error)
	NewInbox() string
}

// How long a result published for an answer waits for it before it is
// published again for the stream, and how long the worker then publishes
// plainly before it asks again.
var (
	answerTimeout = 3 * time.Second
	plainFor      = 10 * time.Second
)

// answers keeps the results published with bus.PublishAnswered until a
// scheduler answers them. A scheduler on the JetStream store answers once
// the job's record is written, so the result stream need not store them;
// one that does not answer in answerTimeout (none runs, it crashed, an
// earlier version, NATS lost the message) or answers AnswerRetry gets the
// result again by Publish, which the stream stores, as every result was
// before. A result may so reach a scheduler twice: the second is a result
// for a finished job (or a fenced attempt), which changes nothing.
//
// A scheduler on the memory store answers AnswerNotStored, and one that
// did not answer in time may not answer at all: the worker then publishes
// plainly for plainFor before it asks again.
//
// A result n asks for its answer on <prefix>n, and lets the scheduler
// answer it in a batch on <prefix>batch (wire.HeaderAnswerBatch): one
// answer for the results it recorded within a few milliseconds, instead of
// one message each.
type answers struct {
	w      *Worker
	pub    answerer
	prefix string // <inbox>. ; an answer comes on <prefix><n>
	batch  string // <prefix>batch: batched answers come here
	drain  func() error

	mu         sync.Mutex
	next       uint64
	pending    map[uint64]*pendingResult
	plainUntil time.Time
	stopped    bool
	resolved   uint64 // pending results an answer removed (for the tests)
}

type pendingResult struct {
	subject string
	packet  *pb.BusPacket
	sent    time.Time
}

// startAnswers subscribes to the worker's answers; nil when the bus cannot
// publish answered results.
func (w *Worker) startAnswers() *answers {
	pub, ok := w.bus.(answerer)
	if !ok {
		return nil
	}
	prefix := pub.NewInbox() + "."
	a := &answers{w: w, pub: pub, prefix: prefix, batch: prefix + batchToken, pending: make(map[uint64]*pendingResult)}
	drain, err := pub.SubscribeAnswers(a.prefix+"*", a.answered)
	if err != nil {
		w.log.Warn("answered results off: results go to the result stream", "err", err)
		return nil
	}
	a.drain = drain
	return a
}

// publish publishes a result: for an answer while schedulers answer,
// plainly otherwise. now is the time the result was stamped with (the
// clock is read once per result, by run).
func (a *answers) publish(subject string, packet *pb.BusPacket, now time.Time) error {
	a.mu.Lock()
	if a.stopped || now.Before(a.plainUntil) {
		a.mu.Unlock()
		return a.w.bus.Publish(subject, packet)
	}
	a.next++
	id := a.next
	a.pending[id] = &pendingResult{subject: subject, packet: packet, sent: now}
	a.mu.Unlock()
	if err := a.pub.PublishAnswered(subject, packet, a.prefix+strconv.FormatUint(id, 10), a.batch); err == nil {
		return nil
	}
	a.mu.Lock()
	delete(a.pending, id)
	a.mu.Unlock()
	return a.w.bus.Publish(subject, packet)
}

// batchToken ends the subject of the worker's batched answers.
const batchToken = "batch"

// answered takes a scheduler's answer: to the result whose number ends
// subject, or, batched, to each result numbered in batch.
func (a *answers) answered(subject, answer string, batch []uint64) {
	if batch == nil {
		id, err := strconv.ParseUint(strings.TrimPrefix(subject, a.prefix), 10, 64)
		if err != nil {
			return
		}
		a.answer(answer, id)
		return
	}
	if subject == a.batch {
		a.answer(answer, batch...)
	}
}

// answer applies answer to the results numbered ids.
func (a *answers) answer(answer string, ids ...uint64) {
	var again []*pendingResult
	a.mu.Lock()
	for _, id := range ids {
		p := a.pending[id]
		if p == nil {
			continue
		}
		delete(a.pending, id)
		a.resolved++
		if answer == bus.AnswerRetry {
			again = append(again, p)
		}
	}
	if answer == bus.AnswerNotStored {
		a.plainUntil = time.Now().Add(plainFor)
	}
	a.mu.Unlock()
	for _, p := range again {
		a.republish(p)
	}
}

// republish publishes p for the stream.
func (a *answers) republish(p *pendingResult) {
	if err := a.w.bus.Publish(p.subject, p.packet); err != nil {
		a.w.publishErrors.Add(1)
		a.w.log.Error("publishing result failed", "job_id", p.packet.GetJobResult().GetJobId(), "err", err)
	}
}

// expire publishes again the results not answered within answerTimeout
// (all of them when all is set), and turns answered results off for
// plainFor if any was not answered.
func (a *answers) expire(all bool) {
	now := time.Now()
	var late []*pendingResult
	a.mu.Lock()
	for id, p := range a.pending {
		if all || now.Sub(p.sent) >= answerTimeout {
			late = append(late, p)
			delete(a.pending, id)
		}
	}
	if len(late) > 0 && !all {
		a.plainUntil = now.Add(plainFor)
	}
	a.mu.Unlock()
	if len(late) > 0 && !all {
		a.w.log.Info("results not answered in time: published for the result stream", "results", len(late), "timeout", answerTimeout)
	}
	for _, p := range late {
		a.republish(p)
	}
}

// loop expires unanswered results until done is closed.
func (a *answers) loop(done <-chan struct{}) {
	t := time.NewTicker(answerTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			a.expire(false)
		}
	}
}

// stop publishes plainly from now on, waits up to wait for the answers
// still due, then publishes what is unanswered for the stream.
func (a *answers) stop(wait time.Duration) {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		n := len(a.pending)
		a.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = a.drain()
	a.expire(true)
}
