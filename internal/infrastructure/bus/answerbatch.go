package bus

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Answers to results in batches. A worker that publishes its results for
// an answer (PublishAnswered) only keeps each result until its answer
// comes, so an answer that says "done" need not go at once: it matters
// only within the worker's patience (seconds). A result published with
// wire.HeaderAnswerBatch may so be answered together with the others its
// sender published meanwhile, in one JobAnswer listing their numbers
// (answered), instead of one message each: at a thousand jobs in flight,
// a few dozen answers travel as one. An answer that asks the sender to
// publish again (AnswerRetry) still goes alone and at once.

// answerBatchDelay is how long a done answer may wait for others to the
// same sender; answerBatchMax how many one batch lists at most.
const (
	answerBatchDelay = 2 * time.Millisecond
	answerBatchMax   = 512
)

// answerBatcher collects done answers by the subject they go to, and sends
// each subject's within answerBatchDelay of its first. It owns no
// goroutine of its own: a timer sends, and close sends what is left and
// waits for a send in progress.
type answerBatcher struct {
	b     *NatsBus
	delay time.Duration // answerBatchDelay

	mu      sync.Mutex
	pending map[string][]uint64 // by batch subject: the numbers answered
	timer   *time.Timer
	armed   bool
	closed  bool

	sending sync.Mutex // held while a batch is sent: close waits for it
	free    [][]uint64 // lists to reuse
}

func newAnswerBatcher(b *NatsBus) *answerBatcher {
	ab := &answerBatcher{b: b, delay: answerBatchDelay, pending: make(map[string][]uint64)}
	ab.timer = time.AfterFunc(time.Hour, ab.flush)
	ab.timer.Stop()
	return ab
}

// answerNumber reads the number that ends a reply subject (<prefix>.<n>),
// and tells whether batchTo is a sibling of it (<prefix>.<token>): a batch
// goes nowhere its results' own answers could not.
func answerNumber(replyTo, batchTo string) (uint64, bool) {
	i := strings.LastIndexByte(replyTo, '.')
	if i < 0 || i == len(replyTo)-1 {
		return 0, false
	}
	token, sibling := strings.CutPrefix(batchTo, replyTo[:i+1])
	if !sibling || token == "" || strings.IndexByte(token, '.') >= 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(replyTo[i+1:], 10, 64)
	return n, err == nil
}

// done answers the result whose answers go to replyTo and, in batches,
// to batchTo: in a batch when batchTo is an inbox next to replyTo and
// replyTo ends in a number, alone on replyTo otherwise.
func (ab *answerBatcher) done(replyTo, batchTo string) {
	n, ok := answerNumber(replyTo, batchTo)
	if !ok || !wire.IsInbox(batchTo) || ab.b.checkSubjectLength(batchTo, 0) != nil {
		ab.b.answerResult(replyTo, AnswerDone)
		return
	}
	ab.mu.Lock()
	if ab.closed {
		ab.mu.Unlock()
		ab.b.answerResult(replyTo, AnswerDone)
		return
	}
	list, known := ab.pending[batchTo]
	if !known && len(ab.free) > 0 {
		list = ab.free[len(ab.free)-1]
		ab.free = ab.free[:len(ab.free)-1]
	}
	list = append(list, n)
	if len(list) >= answerBatchMax {
		delete(ab.pending, batchTo)
		ab.mu.Unlock()
		ab.sending.Lock()
		ab.send(batchTo, list)
		ab.sending.Unlock()
		return
	}
	ab.pending[batchTo] = list
	if !ab.armed {
		ab.armed = true
		ab.timer.Reset(ab.delay)
	}
	ab.mu.Unlock()
}

// flush sends every batch waiting.
func (ab *answerBatcher) flush() {
	ab.sending.Lock()
	defer ab.sending.Unlock()
	ab.mu.Lock()
	ab.armed = false
	batches := ab.pending
	if len(batches) == 0 {
		ab.mu.Unlock()
		return
	}
	ab.pending = make(map[string][]uint64, len(batches))
	ab.mu.Unlock()
	for to, list := range batches {
		ab.send(to, list)
	}
}

// send publishes one batch and keeps its list for reuse; the caller holds
// ab.sending.
func (ab *answerBatcher) send(to string, list []uint64) {
	data, err := proto.Marshal(&pb.BusPacket{Payload: &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Answered: list}}})
	if err == nil {
		err = ab.b.nc.Publish(to, data)
	}
	if err != nil {
		// Unanswered, the sender publishes these results again for the
		// stream: a result for a finished job, which changes nothing.
		ab.b.log.Warn("sending answers failed", "to", truncate(to, 128), "answers", len(list), "err", err)
	}
	ab.mu.Lock()
	if len(ab.free) < 64 && cap(list) <= answerBatchMax {
		ab.free = append(ab.free, list[:0])
	}
	ab.mu.Unlock()
}

// close sends what waits; later answers go alone.
func (ab *answerBatcher) close() {
	ab.mu.Lock()
	ab.closed = true
	ab.mu.Unlock()
	ab.timer.Stop()
	ab.flush()
}
