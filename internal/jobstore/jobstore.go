// Package jobstore keeps job records: the one authority for a job's state.
// A record changes only by compare-and-set on its revision, and only along a
// transition the lifecycle table allows, so two scheduler replicas can never
// both move one job. Memory is the in-process store; kvstore keeps records in
// a NATS JetStream key-value bucket.
package jobstore

import (
	"context"
	"errors"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Errors of every store.
var (
	// ErrNotFound: no job with that id.
	ErrNotFound = errors.New("jobstore: job not found")
	// ErrExists: Create of an id that already has a record.
	ErrExists = errors.New("jobstore: job already exists")
	// ErrRevision: the record changed since it was read; re-read and decide again.
	ErrRevision = errors.New("jobstore: record changed since it was read")
	// ErrInvalidID: the id cannot be a key (empty, too long, or characters
	// other than letters, digits and - _ = .; no leading or trailing dot).
	ErrInvalidID = errors.New("jobstore: invalid job id")
)

// MaxIDLength is the longest job id accepted.
const MaxIDLength = 256

// Record is a job and the revision it was read at.
type Record struct {
	Job      *pb.JobInfo
	Revision uint64
}

// Filter selects jobs to list. Zero values select everything.
type Filter struct {
	State      pb.JobState // JOB_STATE_UNSPECIFIED: any
	DeadLetter bool        // only dead-lettered jobs
	Limit      int         // 0: no limit
}

// Match reports whether job passes the filter (Limit aside).
func (f Filter) Match(job *pb.JobInfo) bool {
	if f.State != pb.JobState_JOB_STATE_UNSPECIFIED && job.GetState() != f.State {
		return false
	}
	if f.DeadLetter && !job.GetDeadLetter() {
		return false
	}
	return true
}

// Store is what a job store does. Implementations: Memory, kvstore.Store.
type Store interface {
	// Create stores a new job. If the id exists it returns the existing
	// record and ErrExists. The job's state must be a legal first state.
	Create(ctx context.Context, job *pb.JobInfo) (Record, error)
	// Get returns the current record, or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// Update replaces prev with next if the record is still at prev.Revision
	// (else ErrRevision) and prev's state may move to next's (else a
	// *lifecycle.IllegalTransitionError).
	Update(ctx context.Context, prev Record, next *pb.JobInfo) (Record, error)
	// List returns the jobs that match, in no particular order.
	List(ctx context.Context, f Filter) ([]Record, error)
	// Watch calls fn with every current record, then with every change, until
	// ctx ends. fn runs on one goroutine and must not block for long.
	Watch(ctx context.Context, fn func(Record)) error
}

// ValidID reports whether id can name a job in every store.
func ValidID(id string) error {
	if id == "" || len(id) > MaxIDLength || id[0] == '.' || id[len(id)-1] == '.' {
		return ErrInvalidID
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '=':
		case c == '.':
			if id[i-1] == '.' {
				return ErrInvalidID
			}
		default:
			return ErrInvalidID
		}
	}
	return nil
}

// DeadLetters holds jobs that exhausted their attempts, until someone re-drives
// or drops them. Implementations: MemoryDeadLetters, kvstore.DeadLetters (a
// JetStream stream).
type DeadLetters interface {
	// Put adds a job; a job already there is replaced.
	Put(ctx context.Context, job *pb.JobInfo) error
	// List returns up to limit jobs (0: all), oldest first.
	List(ctx context.Context, limit int) ([]*pb.JobInfo, error)
	// Take removes a job and returns it, or ErrNotFound.
	Take(ctx context.Context, id string) (*pb.JobInfo, error)
}
