package scheduler

import (
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/pkg/wire"
)

// Placement errors: the topic errors of pkg/wire.
var (
	ErrEmptyTopic   = wire.ErrEmptyTopic
	ErrInvalidTopic = wire.ErrInvalidTopic
)

// NaiveStrategy is the design document's strategy: the subject is the topic,
// and the workers subscribed to it share the job through their queue group.
// It is placement.Naive (placement.StrategyNaive), whose PickSubject checks
// the topic: one implementation, not two.
type NaiveStrategy = placement.Naive

// NewNaiveStrategy returns the naive strategy.
func NewNaiveStrategy() *NaiveStrategy { return &placement.Naive{} }

// ValidateTopic reports whether topic can be dispatched on: wire.ValidateTopic.
func ValidateTopic(topic string) error { return wire.ValidateTopic(topic) }

var _ SchedulingStrategy = (*NaiveStrategy)(nil)
