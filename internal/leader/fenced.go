package leader

import (
	"context"
	"fmt"

	"github.com/cortex-os/core/internal/jobstore"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Fence is what a fenced store asks before each write: a Term.
type Fence interface {
	Valid() bool
}

// FencedStore is a job store whose writes (Create, Update) are refused with
// ErrFenced once its term no longer holds; reads pass through. Reads cannot
// harm: every write is a compare-and-set on a revision, so a decision made
// on a stale read fails anyway.
type FencedStore struct {
	jobstore.Store
	Fence Fence
	Token uint64
}

// Create creates the job if the term holds.
func (s FencedStore) Create(ctx context.Context, job *pb.JobInfo) (jobstore.Record, error) {
	if !s.Fence.Valid() {
		return jobstore.Record{}, fmt.Errorf("%w (token %d)", ErrFenced, s.Token)
	}
	return s.Store.Create(ctx, job)
}

// Update updates the job if the term holds.
func (s FencedStore) Update(ctx context.Context, prev jobstore.Record, next *pb.JobInfo) (jobstore.Record, error) {
	if !s.Fence.Valid() {
		return jobstore.Record{}, fmt.Errorf("%w (token %d)", ErrFenced, s.Token)
	}
	return s.Store.Update(ctx, prev, next)
}

// FencedDeadLetters is dead letters whose writes (Put, Take) are fenced as
// FencedStore's are.
type FencedDeadLetters struct {
	jobstore.DeadLetters
	Fence Fence
	Token uint64
}

// Put adds a job if the term holds.
func (d FencedDeadLetters) Put(ctx context.Context, job *pb.JobInfo) error {
	if !d.Fence.Valid() {
		return fmt.Errorf("%w (token %d)", ErrFenced, d.Token)
	}
	return d.DeadLetters.Put(ctx, job)
}

// Take removes a job if the term holds.
func (d FencedDeadLetters) Take(ctx context.Context, id string) (*pb.JobInfo, error) {
	if !d.Fence.Valid() {
		return nil, fmt.Errorf("%w (token %d)", ErrFenced, d.Token)
	}
	return d.DeadLetters.Take(ctx, id)
}
