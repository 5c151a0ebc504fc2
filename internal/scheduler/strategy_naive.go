package scheduler

import (
	"errors"
	"fmt"
	"strings"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Placement errors.
var (
	ErrEmptyTopic   = errors.New("empty topic")
	ErrInvalidTopic = errors.New("invalid topic")
)

// NaiveStrategy is the design document's strategy: the subject is the topic,
// and the workers subscribed to it share the job through their queue group.
type NaiveStrategy struct{}

// NewNaiveStrategy returns the naive strategy.
func NewNaiveStrategy() *NaiveStrategy { return &NaiveStrategy{} }

// PickSubject implements SchedulingStrategy. The topic must be a literal
// subject under job. (no wildcards, no empty tokens): a job must never be
// published onto a system subject such as sys.job.submit, which would loop.
func (s *NaiveStrategy) PickSubject(req *pb.JobRequest, _ map[string]*pb.Heartbeat) (string, error) {
	topic := req.GetTopic()
	if err := ValidateTopic(topic); err != nil {
		return "", err
	}
	return topic, nil
}

// WorkerBlind implements WorkerBlind: the naive strategy ignores the workers.
func (s *NaiveStrategy) WorkerBlind() bool { return true }

// ValidateTopic reports whether topic can be dispatched on: a literal
// subject under job. of at most MaxTopicLength bytes, with no control
// characters.
func ValidateTopic(topic string) error {
	if topic == "" {
		return ErrEmptyTopic
	}
	if len(topic) > MaxTopicLength {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidTopic, len(topic), MaxTopicLength)
	}
	if !strings.HasPrefix(topic, wire.JobSubjectPrefix) {
		return fmt.Errorf("%w %q: must start with %q", ErrInvalidTopic, topic, wire.JobSubjectPrefix)
	}
	// Token by token, in one pass without allocating: this runs for every
	// job. A token is what strings.Split(topic, ".") would give.
	start := 0
	for i := 0; i <= len(topic); i++ {
		if i < len(topic) {
			switch c := topic[i]; {
			case c <= ' ' || c == 0x7f:
				return fmt.Errorf("%w %q: a blank or control character", ErrInvalidTopic, topic)
			case c == '.':
			default:
				continue
			}
		}
		if tok := topic[start:i]; tok == "" || tok == "*" || tok == ">" {
			return fmt.Errorf("%w %q: empty, wildcard or blank token", ErrInvalidTopic, topic)
		}
		start = i + 1
	}
	return nil
}
