package scheduler

import (
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Placement errors: the topic errors of pkg/wire.
var (
	ErrEmptyTopic   = wire.ErrEmptyTopic
	ErrInvalidTopic = wire.ErrInvalidTopic
)

// NaiveStrategy is the design document's strategy: the subject is the topic,
// and the workers subscribed to it share the job through their queue group.
// It is placement.Naive's decision (placement.StrategyNaive) as the design
// document's SchedulingStrategy, with the topic checked.
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

// ValidateTopic reports whether topic can be dispatched on: wire.ValidateTopic.
func ValidateTopic(topic string) error { return wire.ValidateTopic(topic) }
