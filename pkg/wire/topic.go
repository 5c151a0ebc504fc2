package wire

import (
	"errors"
	"fmt"
	"strings"
)

// Topic errors: ValidateTopic's errors wrap one of them.
var (
	ErrEmptyTopic   = errors.New("empty topic")
	ErrInvalidTopic = errors.New("invalid topic")
)

// MaxTopicLength bounds a topic, the subject a job is dispatched on: well
// under the NATS server's control line (4096 bytes by default), which a
// longer subject would overrun and so have the publisher's connection closed.
const MaxTopicLength = 255

// ValidateTopic reports whether a job can be dispatched on topic: a literal
// subject under job. (JobSubjectPrefix) of at most MaxTopicLength bytes, with
// no empty, wildcard or blank token and no control character. The scheduler refuses a submission whose topic fails it, so that a
// job is never published onto a system subject such as sys.job.submit.
func ValidateTopic(topic string) error {
	if topic == "" {
		return ErrEmptyTopic
	}
	if len(topic) > MaxTopicLength {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidTopic, len(topic), MaxTopicLength)
	}
	if !strings.HasPrefix(topic, JobSubjectPrefix) {
		return fmt.Errorf("%w %q: must start with %q", ErrInvalidTopic, topic, JobSubjectPrefix)
	}
	// Token by token, in one pass without allocating: the scheduler runs it
	// for every job. A token is what strings.Split(topic, ".") would give.
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
