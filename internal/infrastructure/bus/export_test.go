package bus

import (
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Releaser gives a pooled packet back.
type Releaser interface{ Release() }

func (r *intakePacket) Release() { releaseIntakePacket(r) }

type nopReleaser struct{}

func (nopReleaser) Release() {}

// DecodeTransient is decodeTransient for the external tests, as the
// scheduler's intake calls it for packets received on subject.
func DecodeTransient(data []byte, maxBytes int, subject string) (*pb.BusPacket, Releaser, error) {
	p, pooled, err := decodeTransient(data, maxBytes, expectedPayload(subject))
	if pooled == nil {
		return p, nopReleaser{}, err
	}
	return p, pooled, err
}

// AnswerBatcher batches answers to results as the scheduler's handling of
// answered results does, for the external tests.
type AnswerBatcher struct{ ab *answerBatcher }

// NewAnswerBatcher makes an AnswerBatcher on b that sends a batch delay
// after its first answer.
func NewAnswerBatcher(b *NatsBus, delay time.Duration) AnswerBatcher {
	ab := newAnswerBatcher(b)
	ab.delay = delay
	return AnswerBatcher{ab}
}

func (a AnswerBatcher) Done(replyTo, batchTo string) { a.ab.done(replyTo, batchTo) }
func (a AnswerBatcher) Close()                       { a.ab.close() }

// AnswerBatchMax is how many answers one batch lists at most.
const AnswerBatchMax = answerBatchMax
